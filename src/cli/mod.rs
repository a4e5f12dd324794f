//! The command line: argument definitions and one function per command.
//!
//! `main` parses [`Cli`], loads the configuration, sets up logging and calls [`run`], which
//! dispatches to the command. Commands write their results to stdout and diagnostics to
//! stderr. Exit codes: 0 success, 1 runtime failure, 2 usage error or a command this build
//! does not provide yet, 78 invalid configuration.

mod backfill;
pub mod bench;
mod config_check;
mod dlq;
mod migrate;
mod proc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigErrors};
pub use crate::runtime::Role;

/// Exit code of a command that is not available in this build.
pub const EXIT_NOT_AVAILABLE: u8 = 2;
/// Exit code of an invalid configuration (`EX_CONFIG` from sysexits.h).
pub const EXIT_INVALID_CONFIG: u8 = 78;

/// Keeps a PostgreSQL replica of the Farcaster network in sync with a Snapchain node.
#[derive(Debug, Parser)]
#[command(name = "waypoint", version, propagate_version = true)]
#[command(
    after_help = "Configuration: defaults, then the TOML file (--config or \
    WAYPOINT_CONFIG), then environment variables WAYPOINT_<SECTION>__<KEY>.\n\
    Exit codes: 0 success, 1 failure, 2 usage error or command not available, 78 invalid \
    configuration."
)]
pub struct Cli {
    /// TOML configuration file [default: $WAYPOINT_CONFIG]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the dev hub's many flags does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the service (producer, consumer, or both)
    Start(StartArgs),
    /// Create the database if needed and apply pending migrations
    Migrate,
    /// Inspect the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Load history from the hub into PostgreSQL
    #[command(subcommand)]
    Backfill(BackfillCommand),
    /// Inspect and replay dead-lettered stream entries
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Model Context Protocol server
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Run a local Snapchain node (dev hub) serving a deterministic dataset
    Devhub(crate::devhub::DevHubArgs),
    /// Benchmarks that print figures
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `waypoint start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Which part of the pipeline this process runs
    #[arg(value_enum, default_value_t = Role::Both)]
    pub role: Role,
    /// Also run backfill workers in this process
    #[arg(long)]
    pub backfill: bool,
}

/// `waypoint config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration and print it with secrets masked; list every problem otherwise
    Check,
}

/// `waypoint backfill ...`.
#[derive(Debug, Subcommand)]
pub enum BackfillCommand {
    /// Per-FID backfill through the Redis job queue
    #[command(subcommand)]
    Fid(FidCommand),
    /// Backfill on-chain events
    OnchainEvents(OnchainEventsArgs),
}

/// `waypoint backfill fid ...`.
#[derive(Debug, Subcommand)]
pub enum FidCommand {
    /// Queue backfill jobs for FIDs (every registered FID without a selection)
    Queue(QueueArgs),
    /// Work off queued backfill jobs
    Worker(WorkerArgs),
    /// Show the queue: queued, in progress, completed, failed, FIDs done, rate and ETA
    Inspect(InspectArgs),
    /// Queue the failed jobs again, with their attempts reset
    RetryFailed,
    /// Backfill only user data (profiles), then exit
    UserData(UserDataArgs),
}

/// `waypoint backfill fid queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Queue exactly these FIDs (each checked against the hub's registrations)
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FID,...",
        value_parser = parse_fid,
        conflicts_with = "max_fid"
    )]
    pub fids: Vec<u64>,
    /// Queue the registered FIDs up to N [default: every registered FID]
    #[arg(long, value_name = "N", value_parser = parse_fid)]
    pub max_fid: Option<u64>,
    /// FIDs per job [default: backfill.batch_size]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: Option<u64>,
    /// Queue FIDs again even if an earlier backfill completed them
    #[arg(long)]
    pub force: bool,
}

/// `waypoint backfill fid worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Jobs worked on at once [default: BACKFILL_CONCURRENCY or backfill.concurrency]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: Option<u64>,
    /// Exit when the queue is empty instead of waiting for more jobs
    #[arg(long)]
    pub exit_on_complete: bool,
    /// With --exit-on-complete: seconds the queue must stay empty before exiting
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub idle_timeout: u64,
}

/// `waypoint backfill fid inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Failed jobs to list in detail
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub failed: usize,
}

/// `waypoint backfill fid user-data`.
#[derive(Debug, Args)]
pub struct UserDataArgs {
    /// Only the registered FIDs up to N [default: every registered FID]
    #[arg(long, value_name = "N", value_parser = parse_fid)]
    pub max_fid: Option<u64>,
    /// Jobs worked on at once [default: BACKFILL_CONCURRENCY or backfill.concurrency]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: Option<u64>,
}

/// `waypoint backfill onchain-events`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["all", "fid"])))]
pub struct OnchainEventsArgs {
    /// Every registered FID
    #[arg(long)]
    pub all: bool,
    /// One FID
    #[arg(long, value_name = "FID", value_parser = parse_fid)]
    pub fid: Option<u64>,
    /// Only this event type [default: all types]
    #[arg(long, value_enum, value_name = "TYPE")]
    pub event_type: Option<OnchainEventType>,
    /// Jobs worked on at once [default: BACKFILL_CONCURRENCY or backfill.concurrency]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: Option<u64>,
}

/// A FID on the command line: 1 and up, and within the protocol's 32 bits.
fn parse_fid(text: &str) -> Result<u64, String> {
    let fid: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a fid (a whole number from 1)"))?;
    if fid == 0 {
        return Err("fid 0 does not exist: fids start at 1".into());
    }
    if fid > u64::from(u32::MAX) {
        return Err(format!(
            "fid {fid} is beyond the largest fid ({})",
            u32::MAX
        ));
    }
    Ok(fid)
}

/// On-chain event types (Snapchain `OnChainEventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnchainEventType {
    /// Signer (key) add/remove
    #[value(alias = "signer_event")]
    Signer,
    /// Signer migration
    #[value(alias = "signer_migrated")]
    SignerMigrated,
    /// FID registration and transfer
    #[value(alias = "id_register")]
    IdRegister,
    /// Storage rent
    #[value(alias = "storage_rent")]
    StorageRent,
    /// Tier purchase
    #[value(alias = "tier_purchase")]
    TierPurchase,
}

impl OnchainEventType {
    /// The wire number (`OnChainEventType` of the protocol).
    pub fn number(self) -> i32 {
        use waypoint_proto::OnChainEventType as Wire;
        match self {
            OnchainEventType::Signer => Wire::Signer as i32,
            OnchainEventType::SignerMigrated => Wire::SignerMigrated as i32,
            OnchainEventType::IdRegister => Wire::IdRegister as i32,
            OnchainEventType::StorageRent => Wire::StorageRent as i32,
            OnchainEventType::TierPurchase => Wire::TierPurchase as i32,
        }
    }
}

/// `waypoint dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered entries of a stream type with their reasons
    List(DlqArgs),
    /// Move dead-lettered entries of a stream type back to their stream
    Replay(DlqArgs),
}

/// Arguments of `waypoint dlq list|replay`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// Stream type: casts, reactions, links, verifications, user_data, username_proofs,
    /// onchain_events, other (and, for list, unknown: events that did not decode)
    #[arg(value_name = "TYPE")]
    pub stream: String,
    /// list: how many to show (oldest first)
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// replay: only these dead-letter ids (default: all)
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
}

/// `waypoint mcp ...`.
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Serve MCP only (no pipeline)
    Serve(McpServeArgs),
}

/// `waypoint mcp serve`.
#[derive(Debug, Args)]
pub struct McpServeArgs {
    /// Address and port to listen on [default: mcp.bind_address and mcp.port]
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
}

/// `waypoint bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The live pipeline end to end (dev hub → Redis → PostgreSQL): messages/s, lag, RSS, CPU
    Stream(bench::stream::StreamBenchArgs),
    /// A whole dev hub backfilled into an empty database: FIDs/s, messages/s, RSS, CPU
    Backfill(bench::backfill::BackfillBenchArgs),
    /// The REST API over a filled database: requests/s and p50/p99 latency per endpoint
    Api(bench::api::ApiBenchArgs),
}

/// Arguments passed through unparsed to a command that defines its own.
#[derive(Debug, Args)]
pub struct RawArgs {
    /// Arguments of the command
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// Runs the parsed command. `config` is the result of loading the configuration, so that
/// `config check` can report the problems and other commands refuse to start with them.
pub async fn run(cli: Cli, config: Result<Config, ConfigErrors>) -> anyhow::Result<ExitCode> {
    // SIGHUP reloads from the same source: this path, else WAYPOINT_CONFIG as `Config::load`
    // resolves it.
    let config_path = cli.config.clone();
    match cli.command {
        Command::Config(ConfigCommand::Check) => Ok(config_check::run(config)),
        Command::Migrate => match valid(config) {
            Ok(config) => migrate::run(&config).await,
            Err(code) => Ok(code),
        },
        Command::Start(args) => match valid(config) {
            Ok(config) => backfill::start(args, config, config_path).await,
            Err(code) => Ok(code),
        },
        Command::Backfill(command) => match valid(config) {
            Ok(config) => backfill::run(command, config, config_path).await,
            Err(code) => Ok(code),
        },
        Command::Dlq(DlqCommand::List(args)) => match valid(config) {
            Ok(config) => dlq::list(args, &config).await,
            Err(code) => Ok(code),
        },
        Command::Dlq(DlqCommand::Replay(args)) => match valid(config) {
            Ok(config) => dlq::replay(args, &config).await,
            Err(code) => Ok(code),
        },
        Command::Mcp(McpCommand::Serve(args)) => match valid(config) {
            Ok(config) => {
                crate::service::run(
                    crate::runtime::Plan::mcp_only(args.bind),
                    config,
                    config_path,
                )
                .await
            }
            Err(code) => Ok(code),
        },
        Command::Devhub(args) => {
            crate::devhub::run(args, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Stream(args)) => match valid(config) {
            Ok(config) => bench::stream::run(args, config).await,
            Err(code) => Ok(code),
        },
        Command::Bench(BenchCommand::Backfill(args)) => match valid(config) {
            Ok(config) => bench::backfill::run(args, config).await,
            Err(code) => Ok(code),
        },
        Command::Bench(BenchCommand::Api(args)) => match valid(config) {
            Ok(config) => bench::api::run(args, config).await,
            Err(code) => Ok(code),
        },
    }
}

/// Resolves on SIGTERM or SIGINT (for commands that serve until stopped).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until the process is killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// The configuration, or the exit code after printing every problem to stderr.
fn valid(config: Result<Config, ConfigErrors>) -> Result<Config, ExitCode> {
    config.map_err(|errors| {
        print_config_errors(&errors);
        ExitCode::from(EXIT_INVALID_CONFIG)
    })
}

fn print_config_errors(errors: &ConfigErrors) {
    let count = errors.errors().len();
    let noun = if count == 1 { "problem" } else { "problems" };
    eprintln!("invalid configuration, {count} {noun}:");
    for error in errors.errors() {
        eprintln!("  {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_compatible_verbs() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.command);
        assert!(matches!(
            parse(&["waypoint", "start"]),
            Ok(Command::Start(StartArgs {
                role: Role::Both,
                backfill: false
            }))
        ));
        assert!(matches!(
            parse(&["waypoint", "start", "consumer", "--backfill"]),
            Ok(Command::Start(StartArgs {
                role: Role::Consumer,
                backfill: true
            }))
        ));
        match parse(&["waypoint", "backfill", "fid", "queue", "--fids", "1,2,3"]) {
            Ok(Command::Backfill(BackfillCommand::Fid(FidCommand::Queue(args)))) => {
                assert_eq!(args.fids, vec![1, 2, 3]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            parse(&[
                "waypoint",
                "backfill",
                "fid",
                "queue",
                "--fids",
                "1",
                "--max-fid",
                "9"
            ])
            .is_err()
        );
        assert!(parse(&["waypoint", "backfill", "onchain-events"]).is_err());
        assert!(matches!(
            parse(&[
                "waypoint",
                "backfill",
                "onchain-events",
                "--fid",
                "3",
                "--event-type",
                "id_register"
            ]),
            Ok(Command::Backfill(BackfillCommand::OnchainEvents(
                OnchainEventsArgs {
                    event_type: Some(OnchainEventType::IdRegister),
                    ..
                }
            )))
        ));
        match parse(&[
            "waypoint",
            "devhub",
            "--listen",
            "127.0.0.1:0",
            "--fids",
            "5",
        ]) {
            Ok(Command::Devhub(args)) => assert_eq!(args.fids, 5),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(&["waypoint", "devhub", "--fids", "many"]).is_err());
        let with_config =
            Cli::try_parse_from(["waypoint", "config", "check", "--config", "x.toml"])
                .expect("global --config");
        assert_eq!(with_config.config, Some(PathBuf::from("x.toml")));
    }
}
