//! PostgreSQL: the connection pool ([`Pg`]), schema migrations, the apply rules and reading the
//! replica back. Plain client code: nothing here knows about actors.

mod analyze;
pub mod apply;
pub mod meta;
mod migrate;
mod pool;
pub mod reconcile;
pub mod rows;
pub mod state;

pub use analyze::analyze_statement;
pub use migrate::{create_database_if_missing, drop_database, embedded_migrations, migrate};
pub use pool::Pg;

use std::time::Duration;

/// Errors of the PostgreSQL layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `database.url` cannot be used.
    #[error("database.url: {0}")]
    InvalidUrl(String),
    /// The pool could not be built.
    #[error("cannot build the database pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// Start-up gave up waiting for the database.
    #[error(
        "database {target} unreachable after {}s and {attempts} attempts: {last_error}",
        waited.as_secs()
    )]
    Unreachable {
        /// `host:port/dbname`, never the password.
        target: String,
        /// How long connecting was tried.
        waited: Duration,
        /// Connection attempts made.
        attempts: u32,
        /// The error of the last attempt.
        last_error: Box<StoreError>,
    },
    /// Getting a pooled connection failed.
    #[error("database pool: {}", pool_error_text(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("database: {}", pg_error_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

impl StoreError {
    /// Whether the same operation may succeed later: connection loss, timeouts, serialization
    /// failures, deadlocks, a server shutting down or out of connections. Bad SQL, constraint
    /// violations, authentication and configuration errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidUrl(_) | Self::Build(_) | Self::Migration(_) => false,
            Self::Unreachable { .. } => true,
            Self::Pool(error) => match error {
                deadpool_postgres::PoolError::Timeout(_) => true,
                deadpool_postgres::PoolError::Backend(error) => pg_error_is_retryable(error),
                _ => false,
            },
            Self::Postgres(error) => pg_error_is_retryable(error),
        }
    }
}

fn pg_error_is_retryable(error: &tokio_postgres::Error) -> bool {
    let Some(db_error) = error.as_db_error() else {
        // No SQLSTATE: the connection failed or closed, or an I/O timeout.
        return true;
    };
    let code = db_error.code().code();
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, disk full)
        || matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "57014" // query_canceled (statement timeout)
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now (starting up)
        )
}

/// tokio-postgres prints only "db error" for server errors; include the server's message.
fn pg_error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db_error) => format!(
            "{} (SQLSTATE {})",
            db_error.message(),
            db_error.code().code()
        ),
        None => with_causes(error),
    }
}

/// The error followed by its causes (`error connecting to server: Connection refused`).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

fn pool_error_text(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(error) => pg_error_text(error),
        other => other.to_string(),
    }
}

/// `host:port/dbname` of a driver configuration, without credentials.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{dbname}")
}
