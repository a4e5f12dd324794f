//! `waypoint config check`: validates the configuration and prints the effective values as
//! TOML with secrets masked (stdout), or every problem (stderr).

use std::process::ExitCode;

use crate::config::{Config, ConfigErrors};

/// Prints the masked configuration, or every problem and exit code 78.
pub(super) fn run(config: Result<Config, ConfigErrors>) -> ExitCode {
    match super::valid(config) {
        Ok(config) => {
            println!("# effective configuration, secrets masked");
            print!("{config}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
