//! `waypoint migrate`: creates the configured database if the server lacks it, then applies
//! pending migrations and prints their names.

use std::process::ExitCode;

use crate::config::Config;
use crate::store::{self, Pg};

/// Creates the database if needed and applies pending migrations.
pub(super) async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    match store::create_database_if_missing(&config.database).await {
        Ok(true) => println!("created database"),
        Ok(false) => {}
        // Without rights on the maintenance database the target may still exist: go on and
        // let connecting to it tell.
        Err(error) if !error.is_retryable() => {
            tracing::warn!(%error, "could not check whether the database exists");
        }
        Err(error) => return Err(error.into()),
    }
    let pg = Pg::connect(&config.database).await?;
    let applied = store::migrate(&pg).await?;
    if applied.is_empty() {
        let latest = store::embedded_migrations().pop().unwrap_or_default();
        println!("database {} is up to date ({latest})", pg.target());
    } else {
        for name in &applied {
            println!("applied {name}");
        }
        println!(
            "database {}: {} migrations applied",
            pg.target(),
            applied.len()
        );
    }
    pg.close();
    Ok(ExitCode::SUCCESS)
}
