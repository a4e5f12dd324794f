//! Log output for every command: `tracing` events to stderr, as text or JSON lines.
//!
//! The filter comes from `RUST_LOG` when it is set (operators expect that to win), else from
//! `logging.level`. stdout stays free for command output such as `config check`.
//!
//! While a command shows a progress bar on the terminal ([`show_progress_bar`]), log lines are
//! written above it instead of through it.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
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
        .with_writer(Stderr)
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

/// The progress bar on the terminal, while one is shown.
static PROGRESS_BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Log lines go above `bar` until [`hide_progress_bar`].
pub fn show_progress_bar(bar: indicatif::ProgressBar) {
    *PROGRESS_BAR.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar);
}

/// Log lines go straight to stderr again.
pub fn hide_progress_bar() {
    PROGRESS_BAR
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
}

/// Whether a progress bar shows progress (so periodic progress log lines are not needed).
pub fn progress_bar_shown() -> bool {
    PROGRESS_BAR
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
}

/// stderr, writing above the progress bar when one is shown.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = StderrLine;

    fn make_writer(&'a self) -> Self::Writer {
        StderrLine
    }
}

/// One formatted log line on its way to stderr.
struct StderrLine;

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = PROGRESS_BAR
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
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
