//! The shared Redis connection and the key namespace.
//!
//! Normal commands go through one multiplexed [`ConnectionManager`] with a response timeout;
//! it reconnects by itself after the server restarts or drops the connection (the command
//! that sees the drop fails, later ones succeed). Blocking reads (`XREADGROUP ... BLOCK`) must
//! not share it: they would stall every command pipelined behind them and trip the response
//! timeout, so each blocking reader gets its own connection without a timeout.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

use super::StreamsError;
use crate::config::RedisConfig;
use crate::metrics::REDIS_UP;
use crate::startup::{self, RetryFailure};

/// Longest a single connection attempt may take, so an unresponsive address cannot use up
/// the start-up retry window or stall a reconnect for long.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect attempts per connection loss before pending commands fail; the next command
/// starts a new round, so a Redis that is down for longer is still picked up when it returns.
const RECONNECT_ATTEMPTS: usize = 6;
/// First pause between reconnect attempts.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between reconnect attempts: bounds how long a command waits on a dead server.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
/// Separator between the prefix and the parts of a key.
const KEY_SEPARATOR: char = ':';

/// A Redis client bound to this deployment's key prefix. Cheap to clone; clones share the
/// connection.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    manager: ConnectionManager,
    prefix: String,
    target: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Redis {
    /// Connects, retrying with exponential backoff for up to `redis.connect_retry_seconds`.
    /// Errors that waiting cannot fix (bad password, bad URL) fail at once.
    pub async fn connect(config: &RedisConfig) -> Result<Redis, StreamsError> {
        let client = config.client().map_err(StreamsError::InvalidUrl)?;
        let target = describe_target(&config.url);
        // Probe with single attempts so each failure is logged, then build the manager.
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_ATTEMPT_TIMEOUT))
            .set_response_timeout(Some(config.response_timeout()));
        let probe = || async {
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&probe_config)
                .await?;
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await?;
            Ok::<_, StreamsError>(())
        };
        startup::retry_connect(
            "redis",
            &target,
            config.connect_retry(),
            StreamsError::is_retryable,
            probe,
        )
        .await
        .map_err(|failure| match failure {
            RetryFailure::Permanent(error) => error,
            RetryFailure::GaveUp {
                last_error,
                attempts,
                waited,
            } => StreamsError::Unreachable {
                target: target.clone(),
                waited,
                attempts,
                last_error: Box::new(last_error),
            },
        })?;

        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout()))
            .set_connection_timeout(Some(CONNECT_ATTEMPT_TIMEOUT))
            .set_number_of_retries(RECONNECT_ATTEMPTS)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let manager = ConnectionManager::new_with_config(client.clone(), manager_config).await?;
        tracing::info!(server = %target, prefix = %config.prefix, "redis connected");
        Ok(Redis {
            client,
            manager,
            prefix: config.prefix.clone(),
            target,
        })
    }

    /// The shared connection for non-blocking commands (response timeout applies). Clone it
    /// freely; clones multiplex over one socket.
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// A dedicated connection without a response timeout, for `XREADGROUP ... BLOCK` and
    /// other blocking commands. It does not reconnect by itself: on a connection error,
    /// drop it and ask for a new one.
    pub async fn blocking_connection(&self) -> Result<MultiplexedConnection, StreamsError> {
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&blocking_connection_config())
            .await?)
    }

    /// `<prefix>:<part>:<part>...`. A part may carry a Redis Cluster hash tag (`{casts}`) to
    /// keep related keys in one slot.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(KEY_SEPARATOR);
            key.push_str(part);
        }
        key
    }

    /// The key prefix, without the trailing separator.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `host:port/db`, for logs and errors (never contains the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Deletes every key under this prefix (scratch prefixes of benchmarks; never called by the
    /// service). Returns how many keys went.
    pub async fn delete_prefix(&self) -> Result<u64, StreamsError> {
        let mut connection = self.connection();
        let pattern = format!("{}{KEY_SEPARATOR}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            if !keys.is_empty() {
                deleted += redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<u64>(&mut connection)
                    .await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Sends `PING` and records the outcome in `waypoint_redis_up`.
    pub async fn ping(&self) -> Result<(), StreamsError> {
        let mut connection = self.connection();
        let result = redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(StreamsError::from);
        metrics::gauge!(REDIS_UP).set(if result.is_ok() { 1.0 } else { 0.0 });
        result
    }
}

fn blocking_connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_ATTEMPT_TIMEOUT))
        .set_response_timeout(None)
}

/// `host:port/db` (or the socket path) of a Redis URL, without credentials.
fn describe_target(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "redis".to_owned();
    };
    match parsed.host_str() {
        Some(host) if !host.is_empty() => {
            let port = parsed.port().unwrap_or(6379);
            let db = parsed.path().trim_start_matches('/');
            let db = if db.is_empty() { "0" } else { db };
            format!("{host}:{port}/{db}")
        }
        _ => parsed.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_hide_credentials() {
        assert_eq!(
            describe_target("redis://user:secret@cache:6380/2"),
            "cache:6380/2"
        );
        assert_eq!(describe_target("redis://127.0.0.1"), "127.0.0.1:6379/0");
        assert_eq!(describe_target("unix:///run/redis.sock"), "/run/redis.sock");
    }
}
