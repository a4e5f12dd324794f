//! The PostgreSQL connection pool, and start-up that waits for the database to come up.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{StoreError, describe_target};
use crate::config::DatabaseConfig;
use crate::metrics::DATABASE_UP;
use crate::startup::{self, RetryFailure};

/// Longest a single connection attempt may take when the URL sets no `connect_timeout`, so
/// one unresponsive address cannot use up the whole start-up retry window.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shown in `pg_stat_activity` unless the URL sets its own.
const APPLICATION_NAME: &str = "waypoint";

/// A pool of PostgreSQL connections. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    target: String,
    growth: super::analyze::Growth,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("target", &self.target)
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Pg {
    /// Builds the pool and waits until the database answers, retrying with exponential
    /// backoff for up to `database.connect_retry_seconds`. Errors that waiting cannot fix
    /// (bad credentials, missing database) fail at once.
    pub async fn connect(config: &DatabaseConfig) -> Result<Pg, StoreError> {
        let pg = Self::new(config)?;
        retry_connect(&pg.target, config.connect_retry(), || pg.ping()).await?;
        tracing::info!(server = %pg.target, max_connections = config.max_connections, "database connected");
        Ok(pg)
    }

    /// Builds the pool without connecting; connections are opened on first use.
    pub fn new(config: &DatabaseConfig) -> Result<Pg, StoreError> {
        let mut pg_config = config.pg_config().map_err(StoreError::InvalidUrl)?;
        let target = describe_target(&pg_config);
        let timeout = config.timeout();
        // Per-statement timeout for every pooled session, unless the URL already sets one.
        let mut options = pg_config.get_options().unwrap_or_default().to_owned();
        if !options.contains("statement_timeout") {
            options = format!("{options} -c statement_timeout={}", timeout.as_millis());
        }
        // Statements run with arrays of keys: a generic plan cannot see their size and may
        // fall back to scanning whole tables. (Apply transactions price scans out and switch
        // to generic plans for themselves, see `store::apply::write`.)
        if !options.contains("plan_cache_mode") {
            options = format!("{options} -c plan_cache_mode=force_custom_plan");
        }
        pg_config.options(options.trim());
        if pg_config.get_connect_timeout().is_none() {
            pg_config.connect_timeout(timeout.min(CONNECT_ATTEMPT_TIMEOUT));
        }
        if pg_config.get_application_name().is_none() {
            pg_config.application_name(APPLICATION_NAME);
        }
        let manager = Manager::from_config(
            pg_config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(usize::try_from(config.max_connections).unwrap_or(usize::MAX))
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Pg {
            pool,
            target,
            growth: Default::default(),
        })
    }

    /// A pooled connection; returned to the pool when dropped.
    pub async fn get(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Runs `SELECT 1` and records the outcome in `waypoint_database_up`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let result = async {
            let client = self.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        }
        .await;
        metrics::gauge!(DATABASE_UP).set(if result.is_ok() { 1.0 } else { 0.0 });
        result
    }

    /// Records rows written to `table` and refreshes its planner statistics in the background
    /// when it has grown enough (see the `analyze` module).
    pub fn note_written(&self, table: &'static str, rows: u64) {
        if self.growth.note(table, rows) {
            super::analyze::spawn_analyze(self.clone(), self.growth.clone(), table);
        }
    }

    /// The underlying pool, for code that needs its status or transactions.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `host:port/dbname`, for logs and errors (never contains the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes the pool: idle connections are dropped, and waiting and future `get` calls fail.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// Retries `attempt` for up to `window` (see [`crate::startup::retry_connect`]) and turns
/// giving up into [`StoreError::Unreachable`] naming `target`.
pub(super) async fn retry_connect<T, F, Fut>(
    target: &str,
    window: Duration,
    attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    startup::retry_connect(
        "postgres",
        target,
        window,
        StoreError::is_retryable,
        attempt,
    )
    .await
    .map_err(|failure| match failure {
        RetryFailure::Permanent(error) => error,
        RetryFailure::GaveUp {
            last_error,
            attempts,
            waited,
        } => StoreError::Unreachable {
            target: target.to_owned(),
            waited,
            attempts,
            last_error: Box::new(last_error),
        },
    })
}
