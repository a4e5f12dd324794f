//! The `waypoint` binary: parse the command line, load the configuration, set up logging,
//! hand over to the command.

use std::process::ExitCode;

use clap::Parser;
use waypoint::cli::{self, Cli};
use waypoint::config::{Config, LoggingConfig};
use waypoint::logging;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref());
    // With an invalid configuration, log with the defaults while the problems are reported.
    let logging = config
        .as_ref()
        .map(|config| config.logging.clone())
        .unwrap_or_else(|_| LoggingConfig::default());
    if let Err(error) = logging::init(&logging) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    match cli::run(cli, config).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
