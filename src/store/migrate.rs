//! Schema migrations: the SQL files in `migrations/`, embedded at build time and applied in
//! version order by refinery, which records them in `refinery_schema_history`.
//!
//! Several processes may start at once (one producer, many consumers); an advisory lock makes
//! them apply migrations one at a time, so the later ones find nothing left to do.

use tokio_postgres::NoTls;

use super::pool::retry_connect;
use super::{Pg, StoreError, describe_target};
use crate::config::DatabaseConfig;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key held while migrating ("WAYPOINT" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x5741_5950_4f49_4e54;
/// Database every PostgreSQL server has, used to create the configured one.
const MAINTENANCE_DATABASE: &str = "postgres";
/// SQLSTATE duplicate_database: another process created it between our check and CREATE.
const DUPLICATE_DATABASE: &str = "42P04";

/// Names of the migrations built into this binary (`V1__init`, ...), in order.
pub fn embedded_migrations() -> Vec<String> {
    let runner = embedded::migrations::runner();
    let mut migrations: Vec<_> = runner.get_migrations().iter().collect();
    migrations.sort_by_key(|migration| migration.version());
    migrations.into_iter().map(ToString::to_string).collect()
}

/// Applies the migrations not applied yet and returns their names; an up-to-date database
/// gives an empty list.
///
/// Runs on a connection of its own, taken out of the pool, without a statement timeout:
/// building an index on a large table may take longer than any query should.
pub async fn migrate(pg: &Pg) -> Result<Vec<String>, StoreError> {
    let mut client = deadpool_postgres::Object::take(pg.get().await?);
    client.batch_execute("SET statement_timeout = 0").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let report = embedded::migrations::runner().run_async(&mut *client).await;
    // Dropping the connection releases the lock too; unlocking explicitly is just tidier.
    if let Err(error) = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
    {
        tracing::debug!(%error, "advisory unlock failed, the connection closes anyway");
    }
    let applied: Vec<String> = report?
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    for name in &applied {
        tracing::info!(migration = %name, server = %pg.target(), "migration applied");
    }
    Ok(applied)
}

/// Creates the database named in `database.url` if the server does not have it yet,
/// connecting to the `postgres` maintenance database (retrying like [`Pg::connect`]).
/// Returns whether it was created.
pub async fn create_database_if_missing(config: &DatabaseConfig) -> Result<bool, StoreError> {
    let Some((client, name, target)) = maintenance_connection(config).await? else {
        return Ok(false);
    };

    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if exists {
        return Ok(false);
    }
    match client
        .batch_execute(&format!("CREATE DATABASE {}", quote_identifier(&name)))
        .await
    {
        Ok(()) => {
            tracing::info!(server = %target, "database created");
            Ok(true)
        }
        Err(error)
            if error
                .as_db_error()
                .is_some_and(|db| db.code().code() == DUPLICATE_DATABASE) =>
        {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// Drops the database named in `database.url` (disconnecting its sessions), if it exists.
/// For scratch databases (benchmarks); never called by the service.
pub async fn drop_database(config: &DatabaseConfig) -> Result<(), StoreError> {
    let Some((client, name, target)) = maintenance_connection(config).await? else {
        return Ok(());
    };
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&name)
        ))
        .await?;
    tracing::info!(server = %target, "database dropped");
    Ok(())
}

/// A connection to the server's maintenance database, with the name of the database the
/// configuration points at (`None` when that is the maintenance database itself).
async fn maintenance_connection(
    config: &DatabaseConfig,
) -> Result<Option<(tokio_postgres::Client, String, String)>, StoreError> {
    let pg_config = config.pg_config().map_err(StoreError::InvalidUrl)?;
    let target = describe_target(&pg_config);
    let Some(name) = pg_config
        .get_dbname()
        .or(pg_config.get_user())
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    if name == MAINTENANCE_DATABASE {
        return Ok(None);
    }
    let mut admin_config = pg_config;
    admin_config.dbname(MAINTENANCE_DATABASE);
    if admin_config.get_connect_timeout().is_none() {
        admin_config.connect_timeout(config.timeout());
    }
    let client = retry_connect(&target, config.connect_retry(), || async {
        let (client, connection) = admin_config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "maintenance connection closed");
            }
        });
        Ok(client)
    })
    .await?;
    Ok(Some((client, name, target)))
}

/// Quotes an SQL identifier (`"name"`, doubling embedded quotes).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_listed_in_order() {
        let names = embedded_migrations();
        assert_eq!(names.first().map(String::as_str), Some("V1__init"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("waypoint"), "\"waypoint\"");
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
    }
}
