//! Redis: the shared connection ([`Redis`]), the stream layout, publishing, consuming, dead
//! letters, trimming and shard cursors. Plain client code: nothing here knows about actors.

mod cursor;
mod kind;
mod log;
mod redis;

pub use self::kind::{StreamType, UNKNOWN_BUCKET};
pub use self::log::{Claimed, DeadLetter, Entry, NewEntry, ReadFrom, bucket};
pub use self::redis::Redis;

use std::time::Duration;

/// Errors of the Redis layer.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// `redis.url` cannot be used.
    #[error("redis.url: {0}")]
    InvalidUrl(String),
    /// Start-up gave up waiting for Redis.
    #[error(
        "redis {target} unreachable after {}s and {attempts} attempts: {last_error}",
        waited.as_secs()
    )]
    Unreachable {
        /// `host:port/db`, never the password.
        target: String,
        /// How long connecting was tried.
        waited: Duration,
        /// Connection attempts made.
        attempts: u32,
        /// The error of the last attempt.
        last_error: Box<StreamsError>,
    },
    /// A command failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
}

impl StreamsError {
    /// Whether the same command may succeed later: I/O errors, timeouts, dropped connections
    /// and servers that are loading or failing over. Wrong types, bad arguments and
    /// authentication failures are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidUrl(_) => false,
            Self::Unreachable { .. } => true,
            Self::Redis(error) => redis_error_is_retryable(error),
        }
    }
}

fn redis_error_is_retryable(error: &::redis::RedisError) -> bool {
    use ::redis::{ErrorKind, RetryMethod};
    if error.kind() == ErrorKind::AuthenticationFailed {
        return false;
    }
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || !matches!(error.retry_method(), RetryMethod::NoRetry)
}
