//! `waypoint backfill ...` and `waypoint start --backfill`: queue FIDs, run workers, read and
//! repair the queue's books.
//!
//! Queueing talks to Redis and the hub (to list or check registered FIDs); workers run the
//! `backfill` subtree of the tree (with the health server), so they are supervised, drain on
//! SIGTERM and export metrics like `waypoint start`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;

use super::proc::{current_rss_mib, peak_rss_mib};
use super::{
    BackfillCommand, EXIT_NOT_AVAILABLE, FidCommand, InspectArgs, OnchainEventsArgs, QueueArgs,
    StartArgs, UserDataArgs, WorkerArgs,
};
use crate::backfill::{Books, JobKind, Queue, fids};
use crate::config::Config;
use crate::hub;
use crate::runtime::{BackfillPlan, Plan, Role, Runtime};
use crate::service::{self, Service};
use crate::streams::Redis;

/// FIDs checked against the hub at once by `queue --fids`.
const REGISTRATION_CHECKS_IN_FLIGHT: usize = 16;
/// How long the one-shot commands (`user-data`, `onchain-events`) wait with an empty queue
/// before they finish.
const ONE_SHOT_IDLE: Duration = Duration::from_secs(3);
/// How often the terminal progress bar is redrawn.
const BAR_REFRESH: Duration = Duration::from_millis(500);

/// `waypoint start [role] [--backfill]`.
pub async fn start(
    args: StartArgs,
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let backfill = if args.backfill {
        if args.role == Role::Producer {
            eprintln!(
                "waypoint start producer --backfill: backfill writes to PostgreSQL; run it with `start consumer --backfill` or `start --backfill`"
            );
            return Ok(ExitCode::from(EXIT_NOT_AVAILABLE));
        }
        Some(BackfillPlan {
            concurrency: config.backfill.concurrency,
            exit_when_idle: None,
            queue_everything_once: true,
        })
    } else {
        None
    };
    service::run(Plan::for_role(args.role, backfill), config, config_path).await
}

/// `waypoint backfill ...`.
pub async fn run(
    command: BackfillCommand,
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    match command {
        BackfillCommand::Fid(FidCommand::Queue(args)) => queue(args, &config).await,
        BackfillCommand::Fid(FidCommand::Worker(args)) => worker(args, config, config_path).await,
        BackfillCommand::Fid(FidCommand::Inspect(args)) => inspect(args, &config).await,
        BackfillCommand::Fid(FidCommand::RetryFailed) => retry_failed(&config).await,
        BackfillCommand::Fid(FidCommand::UserData(args)) => {
            user_data(args, config, config_path).await
        }
        BackfillCommand::OnchainEvents(args) => onchain_events(args, config, config_path).await,
    }
}

async fn connect_queue(config: &Config) -> anyhow::Result<Queue> {
    let redis = Redis::connect(&config.redis)
        .await
        .context("the backfill queue lives in Redis")?;
    Ok(Queue::new(redis))
}

fn hub_client(config: &Config) -> anyhow::Result<hub::Client> {
    hub::Client::new(hub::options_from_config(&config.hub)).context("hub client")
}

/// `waypoint backfill fid queue`.
async fn queue(args: QueueArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let queue = connect_queue(config).await?;
    let hub = hub_client(config)?;
    let fids = if args.fids.is_empty() {
        eprintln!("listing the hub's registered fids ...");
        fids::all_registered(&hub, args.max_fid)
            .await
            .context("listing registered fids (GetFids)")?
    } else {
        checked_fids(&hub, &args.fids).await?
    };
    let batch_size = args
        .batch_size
        .map_or(config.backfill.batch_size, |size| size as usize);
    let queued = queue
        .enqueue(JobKind::Full, &fids, batch_size, args.force, None)
        .await?;
    println!(
        "queued {} jobs: {} fids (skipped: {} already done{}, {} already queued, in progress or failed)",
        queued.jobs,
        queued.fids,
        queued.already_done,
        if queued.already_done > 0 && !args.force {
            ", --force queues them again"
        } else {
            ""
        },
        queued.already_pending
    );
    Ok(ExitCode::SUCCESS)
}

/// `--fids` without duplicates and without FIDs the hub does not know, each of those named.
async fn checked_fids(hub: &hub::Client, requested: &[u64]) -> anyhow::Result<Vec<u64>> {
    let mut unique = requested.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() < requested.len() {
        eprintln!(
            "--fids lists {} fids more than once; each is queued once",
            requested.len() - unique.len()
        );
    }
    let checks = futures::stream::iter(unique.iter().copied())
        .map(|fid| async move { (fid, fids::is_registered(hub, fid).await) })
        .buffered(REGISTRATION_CHECKS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let mut registered = Vec::with_capacity(checks.len());
    for (fid, check) in checks {
        match check {
            Ok(true) => registered.push(fid),
            Ok(false) => eprintln!("fid {fid} is not registered on the hub; not queued"),
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("checking that fid {fid} is registered")));
            }
        }
    }
    Ok(registered)
}

/// `waypoint backfill fid worker`.
async fn worker(
    args: WorkerArgs,
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let plan = BackfillPlan {
        concurrency: args
            .concurrency
            .map_or(config.backfill.concurrency, |n| n as usize),
        exit_when_idle: args
            .exit_on_complete
            .then(|| Duration::from_secs(args.idle_timeout)),
        queue_everything_once: false,
    };
    run_workers(plan, config, config_path).await
}

/// `waypoint backfill fid user-data`: queues profile jobs, then works the queue off.
async fn user_data(
    args: UserDataArgs,
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let queue = connect_queue(&config).await?;
    let hub = hub_client(&config)?;
    let fids = fids::all_registered(&hub, args.max_fid)
        .await
        .context("listing registered fids (GetFids)")?;
    let queued = queue
        .enqueue(
            JobKind::UserData,
            &fids,
            config.backfill.batch_size,
            true,
            None,
        )
        .await?;
    eprintln!(
        "queued {} profile jobs ({} fids); working the queue off",
        queued.jobs, queued.fids
    );
    let concurrency = args
        .concurrency
        .map_or(config.backfill.concurrency, |n| n as usize);
    run_workers(one_shot(concurrency), config, config_path).await
}

/// `waypoint backfill onchain-events`: queues on-chain jobs, then works the queue off.
async fn onchain_events(
    args: OnchainEventsArgs,
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let queue = connect_queue(&config).await?;
    let hub = hub_client(&config)?;
    let fids = match args.fid {
        Some(fid) => checked_fids(&hub, &[fid]).await?,
        None => fids::all_registered(&hub, None)
            .await
            .context("listing registered fids (GetFids)")?,
    };
    if fids.is_empty() {
        eprintln!("nothing to backfill");
        return Ok(ExitCode::SUCCESS);
    }
    let kind = JobKind::Onchain(args.event_type.map(super::OnchainEventType::number));
    let queued = queue
        .enqueue(kind, &fids, config.backfill.batch_size, true, None)
        .await?;
    eprintln!(
        "queued {} on-chain event jobs ({} fids); working the queue off",
        queued.jobs, queued.fids
    );
    let concurrency = args
        .concurrency
        .map_or(config.backfill.concurrency, |n| n as usize);
    run_workers(one_shot(concurrency), config, config_path).await
}

fn one_shot(concurrency: usize) -> BackfillPlan {
    BackfillPlan {
        concurrency,
        exit_when_idle: Some(ONE_SHOT_IDLE),
        queue_everything_once: false,
    }
}

/// Runs the backfill subtree (with the health server) until the plan says stop or a signal
/// comes; a progress bar on a terminal.
async fn run_workers(
    plan: BackfillPlan,
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let service = Service::start_plan(Plan::backfill_only(plan), config, config_path).await?;
    let runtime = service.runtime().clone();
    tracing::info!(
        rss_mib = round(current_rss_mib()),
        "backfill workers started"
    );
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(progress_bar(runtime.clone())));
    let code = service::serve(service).await;
    if let Some(bar) = bar {
        bar.abort();
        crate::logging::hide_progress_bar();
    }
    let status = runtime.backfill_status().unwrap_or_default();
    tracing::info!(
        fids_done = status.fids_done,
        fids_failed = status.fids_failed,
        peak_rss_mib = round(peak_rss_mib()),
        "backfill workers finished"
    );
    code
}

fn round(mib: f64) -> f64 {
    (mib * 10.0).round() / 10.0
}

/// FIDs done / total, rate and ETA, from the coordinator's reports.
async fn progress_bar(runtime: Runtime) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} backfill [{bar:40}] {pos}/{len} fids  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    crate::logging::show_progress_bar(bar.clone());
    // The books count every completion since the queue began; the bar shows this run's share.
    let mut done_before: Option<u64> = None;
    loop {
        if let Some(status) = runtime.backfill_status() {
            let before = *done_before.get_or_insert(status.fids_done);
            bar.set_length(status.fids_total.saturating_sub(before));
            bar.set_position((status.fids_done + status.fids_failed).saturating_sub(before));
            let eta = status
                .eta_seconds
                .map_or_else(|| "-".to_owned(), |seconds| format!("{seconds}s"));
            bar.set_message(format!(
                "{:.0} fids/s  {:.0} messages/s  eta {eta}  failed {}",
                status.fids_per_second, status.messages_per_second, status.fids_failed
            ));
        }
        bar.tick();
        tokio::time::sleep(BAR_REFRESH).await;
    }
}

/// `waypoint backfill fid inspect`.
async fn inspect(args: InspectArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let queue = connect_queue(config).await?;
    let books = queue.books(args.failed).await?;
    if args.json {
        let mut value = serde_json::to_value(&books)?;
        value["prefix"] = serde_json::json!(config.redis.prefix);
        println!("{value}");
    } else {
        print_books(&config.redis.prefix, &books);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_books(prefix: &str, books: &Books) {
    println!("backfill queue (redis prefix {prefix})");
    println!(
        "  jobs: {} queued, {} waiting to retry, {} in progress, {} failed, {} completed",
        books.jobs_queued,
        books.jobs_delayed,
        books.jobs_in_progress,
        books.jobs_failed,
        books.jobs_completed
    );
    println!(
        "  fids: {} done, {} pending, {} failed ({} with a full backfill done)",
        books.fids_done, books.fids_pending, books.fids_failed, books.fids_done_full
    );
    println!("  messages written: {}", books.messages);
    let eta = books
        .eta_seconds
        .map_or_else(|| "unknown".to_owned(), |seconds| format!("{seconds} s"));
    println!(
        "  rate: {:.1} fids/s, {:.0} messages/s (last minutes, every worker); eta {eta}",
        books.fids_per_second, books.messages_per_second
    );
    if !books.in_progress.is_empty() {
        println!("  in progress:");
        for job in &books.in_progress {
            println!(
                "    job {} {} {} fids, attempt {}, owner {}, running {} s (lease {} s left)",
                job.id,
                job.kind,
                job.num_fids,
                job.attempts,
                job.owner,
                job.age_seconds,
                job.lease_left_seconds
            );
        }
    }
    if !books.failed.is_empty() {
        println!("  failed (`waypoint backfill fid retry-failed` queues them again):");
        for job in &books.failed {
            let fids: Vec<String> = job.fids.iter().map(u64::to_string).collect();
            println!(
                "    job {} {} fids {} after {} attempts, {} s ago: {}",
                job.id,
                job.kind,
                fids.join(","),
                job.attempts,
                job.failed_seconds_ago,
                job.error
            );
        }
    }
}

/// `waypoint backfill fid retry-failed`.
async fn retry_failed(config: &Config) -> anyhow::Result<ExitCode> {
    let queue = connect_queue(config).await?;
    let (jobs, fids) = queue.retry_failed().await?;
    println!("queued {jobs} failed jobs again ({fids} fids)");
    Ok(ExitCode::SUCCESS)
}
