//! The backfill job queue in Redis: jobs of FID batches, taken atomically with a lease,
//! renewed while they run, finished (done, retried, failed or released) in one step, and the
//! books `inspect` reads. Plain client code: nothing here knows about actors.
//!
//! Keys (`<prefix>:{backfill}:...`, one hash tag so every script runs on one Redis Cluster
//! slot):
//!
//! | key | type | what |
//! |---|---|---|
//! | `queue` | list | job ids ready to run, oldest first (returned jobs go to the head) |
//! | `delayed` | zset | failed jobs waiting for their next attempt, by when it is due (ms) |
//! | `leases` | zset | jobs in progress, by when their lease runs out (ms) |
//! | `failed` | zset | jobs out of attempts (or whose FIDs the hub refuses), by when they failed |
//! | `job:<id>` | hash | `kind`, `fids`, `num_fids`, `attempts`, `owner`, `taken_ms`, `queued_ms`, `last_error`, `marker`, `progress` (FIDs finished by the running attempt) |
//! | `seq` | string | the last job id |
//! | `stats` | hash | `fids_pending`, `fids_done` (completions, counted again when FIDs are queued again), `fids_failed`, `jobs_completed`, `messages` |
//! | `recent` | zset | FIDs finished in the last ten minutes (`<job>:<fid>:<messages>:<ms>`), for rates |
//! | `done:<kind>` | bitmap | FIDs completed for a job kind (bit = fid) |
//! | `pending:<kind>` | bitmap | FIDs queued, in progress or failed for a kind: never queued twice |
//! | `marker:<shard>` | hash | the retention marker being worked off: `value`, `claim` (jobs name it: `marker` = `<shard>:<claim>`), `outstanding` jobs, `failed` jobs, `queued`, `wait_for_idle` |
//! | `epoch` | string | when every FID was queued for this deployment's database (mirrors `waypoint_meta`: a mismatch means Redis lost the books) |
//!
//! Why no job is lost or done twice: taking a job moves it from `queue` to `leases` in one
//! script, so a crash between "take" and "done" leaves it leased, and the lease running out
//! returns it. A running job renews its lease every third of the visibility timeout, so a
//! long job is never handed out again while its worker lives. Finishing checks that the
//! caller still holds the lease: a worker that lost it (it stalled past the timeout and the
//! job went to someone else) cannot complete the job a second time. Times are Redis's own
//! clock (`TIME`), so workers on hosts with skewed clocks agree on leases.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use redis::AsyncCommands;

use crate::streams::{Redis, StreamsError};

/// FIDs per script call when queueing (keeps each call's arguments small).
const ENQUEUE_CHUNK: usize = 5_000;
/// Most expired leases handled per call.
const EXPIRED_PER_CALL: usize = 100;
/// Completions this old leave the `recent` set.
const RECENT_KEEP_MS: u64 = 600_000;
/// Rates are measured over at most this much of the recent completions.
const RATE_WINDOW_MS: u64 = 300_000;
/// A rate over less than this would swing too much.
const MIN_RATE_SPAN_MS: u64 = 10_000;
/// Longest pause before a failed job's next attempt.
const MAX_RETRY_DELAY_MS: u64 = 300_000;
/// A marker claim whose FIDs were not all queued within this long is taken over (its
/// claimer died while queueing).
const MARKER_CLAIM_STALE_MS: u64 = 600_000;
/// Longest error text kept with a job.
const MAX_ERROR_LEN: usize = 2_000;

/// Helpers every script starts with.
const LUA_PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Counts a job of a retention marker's claim (`<shard>:<claim>`) in or out; a job of an older
-- claim of the shard is not counted. Returns the claim's outstanding jobs, or -1.
local function marker_add(base, marker, delta, failed)
  if not marker or marker == '' then return -1 end
  local shard, claim = string.match(marker, '^(%d+):(%d+)$')
  if not shard then return -1 end
  local key = base .. 'marker:' .. shard
  if redis.call('HGET', key, 'claim') ~= claim then return -1 end
  if failed then redis.call('HINCRBY', key, 'failed', 1) end
  return redis.call('HINCRBY', key, 'outstanding', delta)
end
local function split(csv)
  local out = {}
  if csv == nil or csv == false or csv == '' then return out end
  for item in string.gmatch(csv, '[^,]+') do table.insert(out, item) end
  return out
end
";

/// ARGV: base, kind, force, batch size, marker claim (`<shard>:<claim>`, '' for none), fids...
/// Returns {jobs, fids queued, already done, already pending}.
const ENQUEUE: &str = r"
local base, kind, force, size, marker = ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4]), ARGV[5]
local done, full, pending = base .. 'done:' .. kind, base .. 'done:full', base .. 'pending:' .. kind
local now = now_ms()
local fresh, already_done, already_pending = {}, 0, 0
for i = 6, #ARGV do
  local fid = tonumber(ARGV[i])
  if redis.call('GETBIT', pending, fid) == 1 then
    already_pending = already_pending + 1
  elseif (not force) and (redis.call('GETBIT', done, fid) == 1
      or (kind ~= 'full' and redis.call('GETBIT', full, fid) == 1)) then
    already_done = already_done + 1
  else
    redis.call('SETBIT', pending, fid, 1)
    table.insert(fresh, ARGV[i])
  end
end
local jobs, i = 0, 1
while i <= #fresh do
  local chunk = {}
  for j = i, math.min(i + size - 1, #fresh) do table.insert(chunk, fresh[j]) end
  local id = redis.call('INCR', base .. 'seq')
  local job = base .. 'job:' .. id
  redis.call('HSET', job, 'kind', kind, 'fids', table.concat(chunk, ','), 'num_fids', #chunk,
    'attempts', 0, 'queued_ms', now)
  if marker ~= '' then
    redis.call('HSET', job, 'marker', marker)
    marker_add(base, marker, 1, false)
  end
  redis.call('RPUSH', base .. 'queue', id)
  jobs = jobs + 1
  i = i + size
end
if #fresh > 0 then redis.call('HINCRBY', base .. 'stats', 'fids_pending', #fresh) end
return {jobs, #fresh, already_done, already_pending}
";

/// ARGV: base, owner, lease ms. Returns {id, kind, fids, attempts, marker} or nil.
const TAKE: &str = r"
local base, owner, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', base .. 'delayed', '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', base .. 'delayed', id)
  redis.call('RPUSH', base .. 'queue', id)
end
while true do
  local id = redis.call('LPOP', base .. 'queue')
  if not id then return false end
  local job = base .. 'job:' .. id
  if redis.call('EXISTS', job) == 1 then
    local attempts = redis.call('HINCRBY', job, 'attempts', 1)
    redis.call('HSET', job, 'owner', owner, 'taken_ms', now)
    redis.call('ZADD', base .. 'leases', now + lease, id)
    local f = redis.call('HMGET', job, 'kind', 'fids', 'marker')
    return {id, f[1], f[2], attempts, f[3] or ''}
  end
end
";

/// ARGV: base, id, owner, lease ms. Returns 1 when renewed, 0 when the lease is lost.
const RENEW: &str = r"
local base, id, owner, lease = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HGET', base .. 'job:' .. id, 'owner') ~= owner
    or not redis.call('ZSCORE', base .. 'leases', id) then
  return 0
end
redis.call('ZADD', base .. 'leases', 'XX', now_ms() + lease, id)
return 1
";

/// ARGV: base, id, owner, messages, done csv, retry csv, retry error, dead csv, dead error,
/// release ('1': give the retry FIDs back without counting the attempt), max attempts,
/// retry delay ms, longest retry delay ms. Returns {0} when the lease is lost, else {1, outcome, marker,
/// outstanding jobs of the marker or -1}.
const FINISH: &str = r"
local base, id, owner = ARGV[1], ARGV[2], ARGV[3]
local job = base .. 'job:' .. id
if redis.call('HGET', job, 'owner') ~= owner or not redis.call('ZSCORE', base .. 'leases', id) then
  return {0}
end
local now = now_ms()
local stats = base .. 'stats'
redis.call('ZREM', base .. 'leases', id)
redis.call('HDEL', job, 'owner', 'taken_ms')
local kind = redis.call('HGET', job, 'kind')
local marker = redis.call('HGET', job, 'marker')
local done, retry, dead = split(ARGV[5]), split(ARGV[6]), split(ARGV[8])
for _, fid in ipairs(done) do
  redis.call('SETBIT', base .. 'done:' .. kind, tonumber(fid), 1)
  redis.call('SETBIT', base .. 'pending:' .. kind, tonumber(fid), 0)
end
if #done > 0 then
  redis.call('HINCRBY', stats, 'fids_done', #done)
  redis.call('HINCRBY', stats, 'fids_pending', -#done)
  redis.call('HINCRBY', stats, 'messages', tonumber(ARGV[4]))
end
redis.call('HDEL', job, 'progress')
local outcome = 'completed'
local function fail(target, target_id, count)
  redis.call('HSET', target, 'failed_ms', now)
  redis.call('ZADD', base .. 'failed', now, target_id)
  redis.call('HINCRBY', stats, 'fids_failed', count)
  redis.call('HINCRBY', stats, 'fids_pending', -count)
end
-- The job's FIDs that are not being retried are finished, well or not: a marker stops
-- waiting for it (a failed one is counted, and counted in again by retry-failed).
local left = -1
if #dead > 0 then
  local target, target_id = job, id
  if #retry > 0 then
    target_id = redis.call('INCR', base .. 'seq')
    target = base .. 'job:' .. target_id
    redis.call('HSET', target, 'kind', kind, 'attempts', redis.call('HGET', job, 'attempts'),
      'queued_ms', redis.call('HGET', job, 'queued_ms'))
    if marker then
      redis.call('HSET', target, 'marker', marker)
      -- In as the job it was split from, out as failed.
      marker_add(base, marker, 0, true)
    end
  end
  redis.call('HSET', target, 'fids', ARGV[8], 'num_fids', #dead, 'last_error', ARGV[9])
  fail(target, target_id, #dead)
  outcome = 'failed'
  if #retry == 0 then left = marker_add(base, marker, -1, true) end
end
if #retry > 0 then
  redis.call('HSET', job, 'fids', ARGV[6], 'num_fids', #retry)
  if ARGV[10] == '1' then
    redis.call('HINCRBY', job, 'attempts', -1)
    redis.call('LPUSH', base .. 'queue', id)
    outcome = 'released'
  else
    redis.call('HSET', job, 'last_error', ARGV[7])
    local attempts = tonumber(redis.call('HGET', job, 'attempts'))
    if attempts >= tonumber(ARGV[11]) then
      fail(job, id, #retry)
      outcome = 'failed'
      left = marker_add(base, marker, -1, true)
    else
      local delay = math.min(tonumber(ARGV[12]) * 2 ^ (attempts - 1), tonumber(ARGV[13]))
      redis.call('ZADD', base .. 'delayed', now + delay, id)
      outcome = 'retry'
    end
  end
elseif #dead == 0 then
  redis.call('DEL', job)
  redis.call('HINCRBY', stats, 'jobs_completed', 1)
  left = marker_add(base, marker, -1, false)
end
return {1, outcome, marker or '', left}
";

/// ARGV: base, id, owner, fid, messages, keep ms. A FID of a running job is finished (for
/// progress and rates; the books count it done when the job finishes). Returns 0 when the
/// lease is lost.
const PROGRESS: &str = r"
local base, id, owner = ARGV[1], ARGV[2], ARGV[3]
local job = base .. 'job:' .. id
if redis.call('HGET', job, 'owner') ~= owner then return 0 end
local now = now_ms()
redis.call('HINCRBY', job, 'progress', 1)
redis.call('ZADD', base .. 'recent', now, id .. ':' .. ARGV[4] .. ':' .. ARGV[5] .. ':' .. now)
redis.call('ZREMRANGEBYSCORE', base .. 'recent', '-inf', now - tonumber(ARGV[6]))
return 1
";

/// ARGV: base, max attempts, reason, owner ('' for every owner whose lease ran out).
/// Returns {id, owner, 'queued'|'failed', ...}.
const RETURN_LEASES: &str = r"
local base, max, reason, only = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now = now_ms()
local ids
if only == '' then
  ids = redis.call('ZRANGEBYSCORE', base .. 'leases', '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
else
  ids = redis.call('ZRANGE', base .. 'leases', 0, -1)
end
local out = {}
for _, id in ipairs(ids) do
  local job = base .. 'job:' .. id
  local owner = redis.call('HGET', job, 'owner') or '?'
  if only == '' or owner == only then
    redis.call('ZREM', base .. 'leases', id)
    if redis.call('EXISTS', job) == 1 then
      redis.call('HDEL', job, 'owner', 'taken_ms', 'progress')
      redis.call('HSET', job, 'last_error', reason .. ' (worker ' .. owner .. ')')
      local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0')
      local state = 'queued'
      if attempts >= max then
        local count = tonumber(redis.call('HGET', job, 'num_fids') or '0')
        redis.call('HSET', job, 'failed_ms', now)
        redis.call('ZADD', base .. 'failed', now, id)
        redis.call('HINCRBY', base .. 'stats', 'fids_failed', count)
        redis.call('HINCRBY', base .. 'stats', 'fids_pending', -count)
        marker_add(base, redis.call('HGET', job, 'marker'), -1, true)
        state = 'failed'
      else
        redis.call('LPUSH', base .. 'queue', id)
      end
      table.insert(out, id)
      table.insert(out, owner)
      table.insert(out, state)
    end
  end
end
return out
";

/// ARGV: base. Returns {jobs, fids}.
const RETRY_FAILED: &str = r"
local base = ARGV[1]
local ids = redis.call('ZRANGE', base .. 'failed', 0, -1)
local fids = 0
for _, id in ipairs(ids) do
  local job = base .. 'job:' .. id
  if redis.call('EXISTS', job) == 1 then
    fids = fids + tonumber(redis.call('HGET', job, 'num_fids') or '0')
    redis.call('HSET', job, 'attempts', 0)
    redis.call('HDEL', job, 'failed_ms')
    redis.call('RPUSH', base .. 'queue', id)
    marker_add(base, redis.call('HGET', job, 'marker'), 1, false)
  end
end
redis.call('DEL', base .. 'failed')
if fids > 0 then
  redis.call('HINCRBY', base .. 'stats', 'fids_failed', -fids)
  redis.call('HINCRBY', base .. 'stats', 'fids_pending', fids)
end
return {#ids, fids}
";

/// ARGV: base, shard, marker value, stale ms. Returns a new claim id when this caller now owns
/// the work of the marker (it must queue the shard's FIDs, naming the claim), 0 when it is
/// already being worked off. Jobs of an earlier claim no longer count for the marker.
const CLAIM_MARKER: &str = r"
local base, shard, value = ARGV[1], ARGV[2], ARGV[3]
local key = base .. 'marker:' .. shard
local now = now_ms()
local current = redis.call('HMGET', key, 'value', 'queued', 'claimed_ms')
if current[1] == value and (current[2] == '1' or now - tonumber(current[3] or '0') < tonumber(ARGV[4])) then
  return 0
end
local claim = redis.call('INCR', base .. 'marker_seq')
redis.call('DEL', key)
redis.call('HSET', key, 'value', value, 'claim', claim, 'outstanding', 0, 'failed', 0,
  'queued', 0, 'claimed_ms', now)
return claim
";

/// KEYS[1]: the retention marker. ARGV: the value it had when its work began. Deletes it
/// unless it changed since (the shard fell behind again).
const DELETE_IF_EQUAL: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("backfill queue: {0}")]
    Redis(#[from] StreamsError),
    /// The books hold something this version does not understand.
    #[error("backfill queue: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for QueueError {
    fn from(error: redis::RedisError) -> Self {
        QueueError::Redis(StreamsError::Redis(error))
    }
}

impl QueueError {
    /// Redis being down or restarting may pass; books this version cannot read will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::Redis(error) => error.is_retryable(),
            QueueError::Corrupt(_) => false,
        }
    }
}

/// What a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobKind {
    /// Everything the hub holds for the FID.
    Full,
    /// Profiles only: user data and username proofs.
    UserData,
    /// On-chain events, of one type or all (`OnChainEventType` number).
    Onchain(Option<i32>),
}

impl JobKind {
    /// The name in the books (`full`, `user_data`, `onchain`, `onchain:3`).
    pub fn name(&self) -> String {
        match self {
            JobKind::Full => "full".to_owned(),
            JobKind::UserData => "user_data".to_owned(),
            JobKind::Onchain(None) => "onchain".to_owned(),
            JobKind::Onchain(Some(event_type)) => format!("onchain:{event_type}"),
        }
    }

    /// The kind of a name in the books.
    pub fn parse(name: &str) -> Option<JobKind> {
        match name {
            "full" => Some(JobKind::Full),
            "user_data" => Some(JobKind::UserData),
            "onchain" => Some(JobKind::Onchain(None)),
            other => other
                .strip_prefix("onchain:")
                .and_then(|event_type| event_type.parse().ok())
                .map(|event_type| JobKind::Onchain(Some(event_type))),
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A job taken from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    pub fids: Vec<u64>,
    /// This attempt's number (1 for the first).
    pub attempts: u32,
    /// The shard whose retention marker queued it.
    pub marker: Option<u32>,
}

/// What queueing did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enqueued {
    pub jobs: u64,
    pub fids: u64,
    /// Skipped: completed before (queue them again with `force`).
    pub already_done: u64,
    /// Skipped: queued, in progress or failed already.
    pub already_pending: u64,
}

/// How a job attempt ended, FID by FID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// FIDs written completely.
    pub done: Vec<u64>,
    /// Messages written for them.
    pub messages: u64,
    /// FIDs to try again (or to give back, with `release`).
    pub retry: Vec<u64>,
    pub retry_error: String,
    /// FIDs the hub refuses for good (NOT_FOUND, INVALID_ARGUMENT): straight to the failed
    /// list.
    pub dead: Vec<u64>,
    pub dead_error: String,
    /// The worker is stopping: `retry` goes back to the head of the queue and the attempt
    /// does not count.
    pub release: bool,
}

/// Retry policy of failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub max_attempts: u32,
    /// Before the second attempt; doubles per attempt, at most five minutes.
    pub retry_delay: Duration,
}

/// Where a finished attempt left its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The caller no longer held the lease: the job went to another worker, and this attempt
    /// changed nothing in the books.
    LeaseLost,
    /// Recorded. `marker` names the retention marker the job worked for, with the jobs it
    /// still waits for once this one completed.
    Recorded {
        outcome: FinishState,
        marker: Option<(u32, i64)>,
    },
}

/// The job's state after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishState {
    Completed,
    /// Waiting for its next attempt.
    Retry,
    /// In the failed list (all or some of its FIDs).
    Failed,
    /// Back at the head of the queue.
    Released,
}

/// A lease returned by [`Queue::return_expired`] or [`Queue::return_owned`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    pub id: u64,
    pub owner: String,
    /// Out of attempts: moved to the failed list instead of the queue.
    pub failed: bool,
}

/// A job in progress, as the books show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InProgress {
    pub id: u64,
    pub kind: String,
    pub owner: String,
    pub num_fids: u64,
    pub attempts: u32,
    /// Since the job was taken.
    pub age_seconds: u64,
    /// Until the lease runs out unless renewed.
    pub lease_left_seconds: i64,
}

/// A failed job, as the books show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedJob {
    pub id: u64,
    pub kind: String,
    pub fids: Vec<u64>,
    pub attempts: u32,
    pub error: String,
    pub failed_seconds_ago: u64,
}

/// Everything `inspect` shows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Books {
    pub jobs_queued: u64,
    pub jobs_delayed: u64,
    pub jobs_in_progress: u64,
    pub jobs_failed: u64,
    pub jobs_completed: u64,
    pub fids_pending: u64,
    /// Of the pending FIDs, those the running attempts finished already.
    pub fids_in_progress_done: u64,
    pub fids_done: u64,
    pub fids_failed: u64,
    /// FIDs whose `full` backfill completed (the `done:full` bitmap).
    pub fids_done_full: u64,
    pub messages: u64,
    /// Jobs in progress (at most the detail limit).
    pub in_progress: Vec<InProgress>,
    /// The oldest failed jobs (at most the detail limit).
    pub failed: Vec<FailedJob>,
    /// Over the recent completions of every worker.
    pub fids_per_second: f64,
    pub messages_per_second: f64,
    /// Until the pending FIDs are done at that rate.
    pub eta_seconds: Option<u64>,
}

impl Books {
    /// Whether nothing is queued, waiting or running.
    pub fn is_idle(&self) -> bool {
        self.jobs_queued == 0 && self.jobs_delayed == 0 && self.jobs_in_progress == 0
    }
}

/// Where a retention marker's work stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerWork {
    /// The marker's value when its work was claimed.
    pub value: String,
    /// Jobs not finished yet.
    pub outstanding: i64,
    /// Jobs that finished in the failed list.
    pub failed: u64,
    /// Every FID of the shard is queued.
    pub queued: bool,
    /// Some FIDs were in other jobs already: done once the whole queue is idle.
    pub wait_for_idle: bool,
}

/// The pipelined reads behind [`Books`]: queued, delayed, leases with their deadlines,
/// failed count, failed ids, stats, `done:full` count, recent completions.
type BooksReply = (
    u64,
    u64,
    Vec<(u64, i64)>,
    u64,
    Vec<u64>,
    BTreeMap<String, i64>,
    u64,
    Vec<String>,
);

/// The backfill queue of one deployment (its Redis key prefix). Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    redis: Redis,
    base: String,
}

impl Queue {
    pub fn new(redis: Redis) -> Queue {
        let mut base = redis.key(&["{backfill}"]);
        base.push(':');
        Queue { redis, base }
    }

    fn key(&self, part: &str) -> String {
        format!("{}{part}", self.base)
    }

    fn script(&self, body: &str) -> redis::Script {
        redis::Script::new(&format!("{LUA_PRELUDE}{body}"))
    }

    /// Queues `fids` as jobs of `batch_size` FIDs, skipping FIDs already queued (always) and
    /// FIDs completed before (unless `force`). `marker`: the shard and claim
    /// ([`Queue::claim_marker`]) of the retention marker that asked for them.
    pub async fn enqueue(
        &self,
        kind: JobKind,
        fids: &[u64],
        batch_size: usize,
        force: bool,
        marker: Option<(u32, u64)>,
    ) -> Result<Enqueued, QueueError> {
        let script = self.script(ENQUEUE);
        let mut connection = self.redis.connection();
        let mut total = Enqueued::default();
        for chunk in fids.chunks(ENQUEUE_CHUNK) {
            let mut invocation = script.prepare_invoke();
            invocation
                .key(self.key("queue"))
                .arg(&self.base)
                .arg(kind.name())
                .arg(if force { "1" } else { "0" })
                .arg(batch_size.max(1))
                .arg(
                    marker
                        .map(|(shard, claim)| format!("{shard}:{claim}"))
                        .unwrap_or_default(),
                );
            for fid in chunk {
                invocation.arg(*fid);
            }
            let [jobs, queued, done, pending]: [u64; 4] =
                invocation.invoke_async(&mut connection).await?;
            total.jobs += jobs;
            total.fids += queued;
            total.already_done += done;
            total.already_pending += pending;
        }
        Ok(total)
    }

    /// Takes the next job (due retries first become ready), leased to `owner` for `lease`.
    pub async fn take(&self, owner: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        let mut connection = self.redis.connection();
        let taken: Option<(u64, String, String, u32, String)> = self
            .script(TAKE)
            .key(self.key("queue"))
            .arg(&self.base)
            .arg(owner)
            .arg(millis(lease))
            .invoke_async(&mut connection)
            .await?;
        let Some((id, kind, fids, attempts, marker)) = taken else {
            return Ok(None);
        };
        let kind = JobKind::parse(&kind)
            .ok_or_else(|| QueueError::Corrupt(format!("job {id} has unknown kind {kind:?}")))?;
        Ok(Some(Job {
            id,
            kind,
            fids: parse_fids(id, &fids)?,
            attempts,
            marker: marker_shard(&marker),
        }))
    }

    /// Extends the lease of a running job; false when the lease is lost (the job timed out
    /// and went back to the queue, maybe to another worker).
    pub async fn renew(&self, job: &Job, owner: &str, lease: Duration) -> Result<bool, QueueError> {
        let mut connection = self.redis.connection();
        let renewed: i64 = self
            .script(RENEW)
            .key(self.key("leases"))
            .arg(&self.base)
            .arg(job.id)
            .arg(owner)
            .arg(millis(lease))
            .invoke_async(&mut connection)
            .await?;
        Ok(renewed == 1)
    }

    /// Records that a FID of a running job is finished (progress and rates only: the FID counts
    /// as done when the job finishes). False when the lease is lost.
    pub async fn progress(
        &self,
        job: &Job,
        owner: &str,
        fid: u64,
        messages: u64,
    ) -> Result<bool, QueueError> {
        let mut connection = self.redis.connection();
        let recorded: i64 = self
            .script(PROGRESS)
            .key(self.key("recent"))
            .arg(&self.base)
            .arg(job.id)
            .arg(owner)
            .arg(fid)
            .arg(messages)
            .arg(RECENT_KEEP_MS)
            .invoke_async(&mut connection)
            .await?;
        Ok(recorded == 1)
    }

    /// Records how an attempt ended, in one step: done FIDs, FIDs to retry (or give back) and
    /// FIDs that failed for good.
    pub async fn finish(
        &self,
        job: &Job,
        owner: &str,
        outcome: &Outcome,
        attempts: Attempts,
    ) -> Result<Finished, QueueError> {
        let mut connection = self.redis.connection();
        let reply: Vec<redis::Value> = self
            .script(FINISH)
            .key(self.key("leases"))
            .arg(&self.base)
            .arg(job.id)
            .arg(owner)
            .arg(outcome.messages)
            .arg(csv(&outcome.done))
            .arg(csv(&outcome.retry))
            .arg(truncate(&outcome.retry_error))
            .arg(csv(&outcome.dead))
            .arg(truncate(&outcome.dead_error))
            .arg(if outcome.release { "1" } else { "0" })
            .arg(attempts.max_attempts.max(1))
            .arg(millis(attempts.retry_delay))
            .arg(MAX_RETRY_DELAY_MS)
            .invoke_async(&mut connection)
            .await?;
        let number = |index: usize| -> Option<i64> {
            reply
                .get(index)
                .and_then(|value| redis::from_redis_value::<i64>(value.clone()).ok())
        };
        let text = |index: usize| -> String {
            reply
                .get(index)
                .and_then(|value| redis::from_redis_value::<String>(value.clone()).ok())
                .unwrap_or_default()
        };
        if number(0) != Some(1) {
            return Ok(Finished::LeaseLost);
        }
        let outcome = match text(1).as_str() {
            "completed" => FinishState::Completed,
            "retry" => FinishState::Retry,
            "failed" => FinishState::Failed,
            "released" => FinishState::Released,
            other => {
                return Err(QueueError::Corrupt(format!(
                    "job {} finished as {other:?}",
                    job.id
                )));
            }
        };
        let marker = marker_shard(&text(2))
            .zip(number(3))
            .filter(|(_, left)| *left >= 0);
        Ok(Finished::Recorded { outcome, marker })
    }

    /// Returns jobs whose lease ran out (their worker died or stalled) to the head of the
    /// queue, or to the failed list when they are out of attempts.
    pub async fn return_expired(&self, max_attempts: u32) -> Result<Vec<Returned>, QueueError> {
        self.return_leases(
            max_attempts,
            "lease expired: its worker stopped renewing it",
            "",
        )
        .await
    }

    /// Returns the jobs `owner` holds (a restarted worker gives back what its crashed
    /// incarnation was doing, without waiting for the leases to run out).
    pub async fn return_owned(
        &self,
        owner: &str,
        max_attempts: u32,
    ) -> Result<Vec<Returned>, QueueError> {
        self.return_leases(max_attempts, "its worker restarted", owner)
            .await
    }

    async fn return_leases(
        &self,
        max_attempts: u32,
        reason: &str,
        owner: &str,
    ) -> Result<Vec<Returned>, QueueError> {
        let mut connection = self.redis.connection();
        let flat: Vec<String> = self
            .script(RETURN_LEASES)
            .key(self.key("leases"))
            .arg(&self.base)
            .arg(max_attempts.max(1))
            .arg(reason)
            .arg(owner)
            .arg(EXPIRED_PER_CALL)
            .invoke_async(&mut connection)
            .await?;
        flat.chunks(3)
            .map(|triple| match triple {
                [id, owner, state] => Ok(Returned {
                    id: id
                        .parse()
                        .map_err(|_| QueueError::Corrupt(format!("job id {id:?}")))?,
                    owner: owner.clone(),
                    failed: state == "failed",
                }),
                _ => Err(QueueError::Corrupt("short lease reply".into())),
            })
            .collect()
    }

    /// Queues every failed job again with its attempts reset; returns (jobs, FIDs).
    pub async fn retry_failed(&self) -> Result<(u64, u64), QueueError> {
        let mut connection = self.redis.connection();
        let [jobs, fids]: [u64; 2] = self
            .script(RETRY_FAILED)
            .key(self.key("failed"))
            .arg(&self.base)
            .invoke_async(&mut connection)
            .await?;
        Ok((jobs, fids))
    }

    /// The books: counts, jobs in progress, the oldest `detail_limit` failed jobs, rates and
    /// the ETA.
    pub async fn books(&self, detail_limit: usize) -> Result<Books, QueueError> {
        let mut connection = self.redis.connection();
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut connection).await?;
        let now_ms = seconds * 1000 + micros / 1000;
        let (jobs_queued, jobs_delayed, leases, jobs_failed, failed_ids, stats, done_full, recent): BooksReply = redis::pipe()
            .llen(self.key("queue"))
            .zcard(self.key("delayed"))
            .zrange_withscores(self.key("leases"), 0, -1)
            .zcard(self.key("failed"))
            .zrange(
                self.key("failed"),
                0,
                isize::try_from(detail_limit).unwrap_or(isize::MAX) - 1,
            )
            .hgetall(self.key("stats"))
            .bitcount(self.key("done:full"))
            .zrangebyscore(
                self.key("recent"),
                now_ms.saturating_sub(RATE_WINDOW_MS),
                "+inf",
            )
            .query_async(&mut connection)
            .await?;
        let stat = |name: &str| stats.get(name).copied().unwrap_or(0).max(0) as u64;
        // FIDs the running attempts finished already.
        let mut progress = redis::pipe();
        for (id, _) in &leases {
            progress.hget(self.job_key(*id), "progress");
        }
        let progress: Vec<Option<u64>> = if leases.is_empty() {
            Vec::new()
        } else {
            progress.query_async(&mut connection).await?
        };
        let fids_in_progress_done = progress.into_iter().flatten().sum();

        let mut in_progress = Vec::with_capacity(leases.len());
        for (id, deadline) in leases.iter().take(detail_limit) {
            let fields: BTreeMap<String, String> = connection.hgetall(self.job_key(*id)).await?;
            let taken = field_u64(&fields, "taken_ms");
            in_progress.push(InProgress {
                id: *id,
                kind: fields.get("kind").cloned().unwrap_or_default(),
                owner: fields.get("owner").cloned().unwrap_or_default(),
                num_fids: field_u64(&fields, "num_fids"),
                attempts: field_u64(&fields, "attempts") as u32,
                age_seconds: now_ms.saturating_sub(taken) / 1000,
                lease_left_seconds: (deadline - now_ms as i64) / 1000,
            });
        }
        let mut failed = Vec::with_capacity(failed_ids.len());
        for id in failed_ids {
            let fields: BTreeMap<String, String> = connection.hgetall(self.job_key(id)).await?;
            failed.push(FailedJob {
                id,
                kind: fields.get("kind").cloned().unwrap_or_default(),
                fids: parse_fids(id, fields.get("fids").map_or("", String::as_str))?,
                attempts: field_u64(&fields, "attempts") as u32,
                error: fields.get("last_error").cloned().unwrap_or_default(),
                failed_seconds_ago: now_ms.saturating_sub(field_u64(&fields, "failed_ms")) / 1000,
            });
        }

        // Rates over the recently finished FIDs: `<job>:<fid>:<messages>:<ms>`.
        let mut fids_recent = 0u64;
        let mut messages_recent = 0u64;
        let mut earliest = now_ms;
        for sample in &recent {
            let parts: Vec<&str> = sample.split(':').collect();
            if let [_, _, messages, at] = parts.as_slice() {
                fids_recent += 1;
                messages_recent += messages.parse::<u64>().unwrap_or(0);
                earliest = earliest.min(at.parse().unwrap_or(now_ms));
            }
        }
        let span_seconds = (now_ms.saturating_sub(earliest)).max(MIN_RATE_SPAN_MS) as f64 / 1000.0;
        let fids_per_second = fids_recent as f64 / span_seconds;
        let messages_per_second = messages_recent as f64 / span_seconds;
        let fids_pending = stat("fids_pending");
        let fids_left = fids_pending.saturating_sub(fids_in_progress_done);
        let eta_seconds = (fids_per_second > 0.0)
            .then(|| (fids_left as f64 / fids_per_second).ceil() as u64)
            .or((fids_left == 0).then_some(0));
        Ok(Books {
            jobs_queued,
            jobs_delayed,
            jobs_in_progress: leases.len() as u64,
            jobs_failed,
            jobs_completed: stat("jobs_completed"),
            fids_pending,
            fids_in_progress_done,
            fids_done: stat("fids_done"),
            fids_failed: stat("fids_failed"),
            fids_done_full: done_full,
            messages: stat("messages"),
            in_progress,
            failed,
            fids_per_second,
            messages_per_second,
            eta_seconds,
        })
    }

    fn job_key(&self, id: u64) -> String {
        self.key(&format!("job:{id}"))
    }

    /// Claims the work of a shard's retention marker (`value` is the marker as stored): the
    /// claim when the caller must now queue the shard's FIDs (naming it), None when someone
    /// already does or did.
    pub async fn claim_marker(&self, shard: u32, value: &str) -> Result<Option<u64>, QueueError> {
        let mut connection = self.redis.connection();
        let claimed: u64 = self
            .script(CLAIM_MARKER)
            .key(self.key("queue"))
            .arg(&self.base)
            .arg(shard)
            .arg(value)
            .arg(MARKER_CLAIM_STALE_MS)
            .invoke_async(&mut connection)
            .await?;
        Ok((claimed > 0).then_some(claimed))
    }

    /// Records that every FID of the shard is queued for its marker; `wait_for_idle`: some of
    /// them were queued already by other jobs, so the marker's work is done only once the whole
    /// queue is.
    pub async fn marker_queued(&self, shard: u32, wait_for_idle: bool) -> Result<(), QueueError> {
        let mut connection = self.redis.connection();
        let () = connection
            .hset_multiple(
                self.key(&format!("marker:{shard}")),
                &[("queued", 1), ("wait_for_idle", u8::from(wait_for_idle))],
            )
            .await?;
        Ok(())
    }

    /// Where the work of a shard's marker stands, if it was claimed.
    pub async fn marker_work(&self, shard: u32) -> Result<Option<MarkerWork>, QueueError> {
        let mut connection = self.redis.connection();
        let fields: BTreeMap<String, String> = connection
            .hgetall(self.key(&format!("marker:{shard}")))
            .await?;
        let Some(value) = fields.get("value") else {
            return Ok(None);
        };
        Ok(Some(MarkerWork {
            value: value.clone(),
            outstanding: fields
                .get("outstanding")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            failed: fields
                .get("failed")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            queued: fields.get("queued").is_some_and(|queued| queued == "1"),
            wait_for_idle: fields.get("wait_for_idle").is_some_and(|wait| wait == "1"),
        }))
    }

    /// The marker's work is done: forgets the claim and deletes the retention marker itself
    /// unless it changed meanwhile. Returns whether the marker was deleted.
    pub async fn clear_marker(&self, shard: u32, value: &str) -> Result<bool, QueueError> {
        let mut connection = self.redis.connection();
        let deleted: i64 = redis::Script::new(DELETE_IF_EQUAL)
            .key(self.redis.backfill_needed_key(shard))
            .arg(value)
            .invoke_async(&mut connection)
            .await?;
        let () = connection.del(self.key(&format!("marker:{shard}"))).await?;
        Ok(deleted == 1)
    }

    /// When every FID was queued (see [`Queue::set_epoch`]), as these books remember it.
    pub async fn epoch(&self) -> Result<Option<String>, QueueError> {
        let mut connection = self.redis.connection();
        Ok(connection.get(self.key("epoch")).await?)
    }

    /// Records when every FID was queued, so a later start can tell whether these books still
    /// hold those jobs.
    pub async fn set_epoch(&self, value: &str) -> Result<(), QueueError> {
        let mut connection = self.redis.connection();
        let () = connection.set(self.key("epoch"), value).await?;
        Ok(())
    }

    /// The retention marker of `shard` as stored (the text `repair` wrote), if any.
    pub async fn retention_marker(&self, shard: u32) -> Result<Option<String>, QueueError> {
        let mut connection = self.redis.connection();
        Ok(connection
            .get(self.redis.backfill_needed_key(shard))
            .await?)
    }
}

/// The shard of a job's `marker` field (`<shard>:<claim>`).
fn marker_shard(marker: &str) -> Option<u32> {
    marker.split(':').next()?.parse().ok()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn csv(fids: &[u64]) -> String {
    fids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_fids(id: u64, text: &str) -> Result<Vec<u64>, QueueError> {
    text.split(',')
        .filter(|fid| !fid.is_empty())
        .map(|fid| {
            fid.parse()
                .map_err(|_| QueueError::Corrupt(format!("job {id} lists fid {fid:?}")))
        })
        .collect()
}

fn field_u64(fields: &BTreeMap<String, String>, name: &str) -> u64 {
    fields
        .get(name)
        .and_then(|value| value.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0) as u64
}

/// Error texts are kept whole up to a limit, cut on a character boundary.
fn truncate(text: &str) -> &str {
    if text.len() <= MAX_ERROR_LEN {
        return text;
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [
            JobKind::Full,
            JobKind::UserData,
            JobKind::Onchain(None),
            JobKind::Onchain(Some(3)),
        ] {
            assert_eq!(JobKind::parse(&kind.name()), Some(kind));
        }
        assert_eq!(JobKind::parse("onchain:x"), None);
        assert_eq!(JobKind::parse("everything"), None);
    }

    #[test]
    fn fid_lists_parse_or_name_the_bad_entry() {
        assert_eq!(parse_fids(1, "1,2,30").unwrap(), vec![1, 2, 30]);
        assert_eq!(parse_fids(1, "").unwrap(), Vec::<u64>::new());
        let error = parse_fids(9, "1,x").unwrap_err().to_string();
        assert!(
            error.contains("job 9") && error.contains("\"x\""),
            "{error}"
        );
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate(&text);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short"), "short");
    }
}
