//! `waypoint bench backfill`: the backfill of a whole dev hub into an empty database, measured.
//!
//! A dev hub child process serves `--fids` FIDs with about `--messages-per-fid` messages each
//! and no live traffic. Every registered FID is queued, then the backfill subtree runs in this
//! process exactly as `waypoint backfill fid worker` runs it, until the queue is empty. Printed:
//! FIDs/s, messages/s into PostgreSQL, peak RSS and CPU of this process, the dev hub's CPU, and
//! how busy the whole machine was (the rest of it is PostgreSQL and Redis).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::{DevHubChild, cleanup, scratch};
use crate::backfill::{Queue, fids};
use crate::cli::proc::{machine_cpu_seconds, peak_rss_mib, process_cpu_seconds};
use crate::config::Config;
use crate::runtime::{BackfillPlan, Plan};
use crate::service::Service;

/// `waypoint bench backfill`.
#[derive(Debug, Args)]
pub struct BackfillBenchArgs {
    /// FIDs on the dev hub
    #[arg(long, default_value_t = 2_000)]
    pub fids: u64,
    /// Average messages per FID
    #[arg(long, default_value_t = 500)]
    pub messages_per_fid: u32,
    /// Data shards of the dev hub
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// Jobs worked on at once [default: backfill.concurrency]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Dataset seed
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Turn message verification off (it is on by default, as in production)
    #[arg(long)]
    pub no_verify: bool,
    /// Print the results as one JSON object on the last line
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch database and Redis keys (for inspection)
    #[arg(long)]
    pub keep: bool,
}

struct Figures {
    /// Per part: (batches, seconds applying), from the apply-duration histogram.
    apply: Vec<(String, u64, f64)>,
    fids: u64,
    messages: u64,
    elapsed: Duration,
    cpu_seconds: f64,
    devhub_cpu_seconds: f64,
    machine_busy_seconds: f64,
    machine_total_seconds: f64,
    peak_rss_mib: f64,
    concurrency: usize,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BackfillBenchArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    if args.fids == 0 || args.messages_per_fid == 0 {
        bail!("--fids and --messages-per-fid must be positive");
    }
    scratch(&mut config, !args.no_verify)?;
    if let Some(concurrency) = args.concurrency {
        config.backfill.concurrency = concurrency.max(1);
    }
    // The bench measures Waypoint, not a hosted hub's rate limit.
    config.hub.max_requests_per_second = 0;
    eprintln!(
        "bench: building a dev hub with {} fids x {} messages ...",
        args.fids, args.messages_per_fid
    );
    let devhub = DevHubChild::start(
        &config,
        &[
            "--fids".into(),
            args.fids.to_string(),
            "--messages-per-fid".into(),
            args.messages_per_fid.to_string(),
            "--shards".into(),
            args.shards.to_string(),
            "--seed".into(),
            args.seed.to_string(),
        ],
    )
    .await?;
    let result = measure(config.clone(), &devhub).await;
    devhub.stop();
    if !args.keep {
        cleanup(&config).await;
    }
    let figures = result?;
    print(&args, &figures);
    Ok(ExitCode::SUCCESS)
}

async fn measure(config: Config, devhub: &DevHubChild) -> anyhow::Result<Figures> {
    let concurrency = config.backfill.concurrency;
    let queue = queue_every_fid(&config).await?;

    let plan = BackfillPlan {
        concurrency,
        exit_when_idle: None,
        queue_everything_once: false,
    };
    let service = Service::start_plan(Plan::backfill_only(plan), config, None).await?;
    let started = Instant::now();
    let cpu_start = process_cpu_seconds();
    let devhub_cpu_start = devhub.cpu_seconds();
    let (busy_start, total_start) = machine_cpu_seconds();
    let mut last_report = Instant::now();
    let books = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let books = queue.books(0).await?;
        if books.is_idle() {
            break books;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "bench: {:>5.1}s {} fids done, {} messages, {:.0} messages/s",
                started.elapsed().as_secs_f64(),
                books.fids_done,
                books.messages,
                books.messages as f64 / started.elapsed().as_secs_f64()
            );
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("the backfill did not finish within an hour");
        }
    };
    let elapsed = started.elapsed();
    let (busy_end, total_end) = machine_cpu_seconds();
    let figures = Figures {
        apply: apply_times(service.runtime()),
        fids: books.fids_done,
        messages: books.messages,
        elapsed,
        cpu_seconds: process_cpu_seconds() - cpu_start,
        devhub_cpu_seconds: devhub.cpu_seconds() - devhub_cpu_start,
        machine_busy_seconds: busy_end - busy_start,
        machine_total_seconds: total_end - total_start,
        peak_rss_mib: peak_rss_mib(),
        concurrency,
    };
    if books.fids_failed > 0 {
        eprintln!("bench: {} fids failed", books.fids_failed);
    }
    service.shutdown().await.ok();
    Ok(figures)
}

/// Queues every FID the (bench's) hub has registered, for the backfill to take.
pub(super) async fn queue_every_fid(config: &Config) -> anyhow::Result<Queue> {
    let hub = crate::hub::Client::new(crate::hub::options_from_config(&config.hub))?;
    let registered = fids::all_registered(&hub, None).await?;
    let redis = crate::streams::Redis::connect(&config.redis).await?;
    let queue = Queue::new(redis);
    queue
        .enqueue(
            crate::backfill::JobKind::Full,
            &registered,
            config.backfill.batch_size,
            false,
            None,
        )
        .await?;
    eprintln!("bench: queued {} fids", registered.len());
    Ok(queue)
}

/// Batches and seconds applying per backfill part, from the apply-duration histogram.
fn apply_times(runtime: &crate::runtime::Runtime) -> Vec<(String, u64, f64)> {
    let metric = crate::metrics::STORE_APPLY_BATCH_DURATION_SECONDS;
    let rendered = runtime.metrics().render();
    let value = |suffix: &str, label: &str| -> f64 {
        let prefix = format!("{metric}_{suffix}{{stream=\"{label}\"}} ");
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or(0.0)
    };
    crate::store::rows::BatchPart::ALL
        .iter()
        .map(|part| {
            let label = format!("backfill:{}", part.as_str());
            let batches = value("count", &label) as u64;
            let seconds = value("sum", &label);
            (label, batches, seconds)
        })
        .filter(|(_, batches, _)| *batches > 0)
        .collect()
}

fn print(args: &BackfillBenchArgs, figures: &Figures) {
    let seconds = figures.elapsed.as_secs_f64().max(1e-9);
    let fids_per_second = figures.fids as f64 / seconds;
    let messages_per_second = figures.messages as f64 / seconds;
    let cpu_percent = 100.0 * figures.cpu_seconds / seconds;
    let devhub_cpu_percent = 100.0 * figures.devhub_cpu_seconds / seconds;
    let machine_busy_percent =
        100.0 * figures.machine_busy_seconds / figures.machine_total_seconds.max(1e-9);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let other_percent =
        (machine_busy_percent * cores as f64 - cpu_percent - devhub_cpu_percent).max(0.0);
    println!(
        "waypoint bench backfill (verification {}, concurrency {})",
        if args.no_verify { "off" } else { "on" },
        figures.concurrency
    );
    println!(
        "  {} fids, {} messages in {:.1} s = {:.1} fids/s, {:.0} messages/s",
        figures.fids, figures.messages, seconds, fids_per_second, messages_per_second
    );
    println!("  peak rss (this process): {:.0} MiB", figures.peak_rss_mib);
    println!(
        "  cpu: waypoint {cpu_percent:.0}%, dev hub {devhub_cpu_percent:.0}%, the rest (PostgreSQL, Redis, others) {other_percent:.0}% of one core; machine {machine_busy_percent:.0}% busy over {cores} cores"
    );
    println!("  where the database time goes (batches, average, total applying):");
    for (part, batches, seconds) in &figures.apply {
        println!(
            "    {part:<24} {batches:>6} batches  {:>7.1} ms  {seconds:>6.1} s",
            1000.0 * seconds / (*batches).max(1) as f64
        );
    }
    if args.json {
        println!(
            "{}",
            json!({
                "fids": figures.fids,
                "messages": figures.messages,
                "seconds": seconds,
                "fids_per_second": fids_per_second,
                "messages_per_second": messages_per_second,
                "peak_rss_mib": figures.peak_rss_mib,
                "cpu_percent": cpu_percent,
                "devhub_cpu_percent": devhub_cpu_percent,
                "other_cpu_percent": other_percent,
                "machine_busy_percent": machine_busy_percent,
                "concurrency": figures.concurrency,
                "verification": !args.no_verify,
            })
        );
    }
}
