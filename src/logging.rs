//! Log output for every command: `tracing` events to stderr, as text or JSON lines.
//!
//! The filter comes from `RUST_LOG` when it is set (operators expect that to win), else from
//! `logging.level`. stdout stays free for command output such as `config check`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LoggingConfig};

/// Errors of setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `logging.level` is not a valid filter (config validation normally catches this first).
    #[error("logging.level: invalid filter {level:?}: {source}")]
    InvalidLevel {
        /// The filter text.
        level: String,
        /// What the parser said.
        source: tracing_subscriber::filter::ParseError,
    },
}

impl LoggingError {
    /// Never: a bad filter stays bad.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Installs the global subscriber. Returns `Ok(false)` when one was already installed (tests,
/// or a second call), which leaves the first one in place.
pub fn init(config: &LoggingConfig) -> Result<bool, LoggingError> {
    let (filter, rust_log_problem) = filter(config)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and container logs get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let installed = match config.format {
        LogFormat::Text => builder.finish().try_init().is_ok(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .finish()
            .try_init()
            .is_ok(),
    };
    if let Some(problem) = rust_log_problem {
        tracing::warn!(
            error = %problem,
            level = %config.level,
            "RUST_LOG is invalid, using logging.level"
        );
    }
    Ok(installed)
}

/// `RUST_LOG` when set and valid, else `logging.level`; also returns why `RUST_LOG` was not
/// used when it was set but invalid.
fn filter(config: &LoggingConfig) -> Result<(EnvFilter, Option<String>), LoggingError> {
    let from_level = || {
        EnvFilter::builder()
            .parse(&config.level)
            .map_err(|source| LoggingError::InvalidLevel {
                level: config.level.clone(),
                source,
            })
    };
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => {
            match EnvFilter::builder().parse(&directives) {
                Ok(filter) => Ok((filter, None)),
                Err(error) => Ok((from_level()?, Some(error.to_string()))),
            }
        }
        _ => Ok((from_level()?, None)),
    }
}
