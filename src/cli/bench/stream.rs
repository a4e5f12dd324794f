//! `waypoint bench stream`: the whole live pipeline on this machine, measured.
//!
//! A dev hub runs as a child process (so its memory is not counted) with a history of about
//! `--messages` messages and, once serving, `--live-rate` new messages per second. The
//! pipeline runs in this process exactly as `waypoint start` runs it, against the configured
//! PostgreSQL and Redis, in a scratch database and key prefix that are removed afterwards.
//!
//! Two phases:
//! 1. catch-up: from the first event to the moment every published entry is applied and
//!    acknowledged — messages/s, CPU, peak RSS and RSS while the backlog is drained;
//! 2. steady state: `--steady-seconds` at the live rate — hub-to-row lag p50/p99 (from the
//!    subscriber receiving an event to the commit of its batch).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::json;

use crate::config::Config;
use crate::hub;
use crate::runtime::Role;
use crate::service::Service;

use super::{DevHubChild, cleanup, counter_total, scratch};
use crate::cli::proc::{current_rss_mib, peak_rss_mib, process_cpu_seconds};

/// `waypoint bench stream`.
#[derive(Debug, Args)]
pub struct StreamBenchArgs {
    /// Approximate number of messages in the hub's history (the backlog to catch up on)
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Messages per fid in the history
    #[arg(long, default_value_t = 100)]
    pub messages_per_fid: u32,
    /// Data shards of the dev hub
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// New messages per second while measuring (mainnet's default ceiling is 2,000)
    #[arg(long, default_value_t = 2000.0)]
    pub live_rate: f64,
    /// Length of the steady-state phase, in seconds
    #[arg(long, default_value_t = 30)]
    pub steady_seconds: u64,
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

/// Runs the benchmark and prints its figures.
pub async fn run(args: StreamBenchArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    if args.messages == 0 || args.messages_per_fid == 0 {
        bail!("--messages and --messages-per-fid must be positive");
    }
    let fids = args
        .messages
        .div_ceil(u64::from(args.messages_per_fid))
        .max(1);
    scratch(&mut config, !args.no_verify)?;
    eprintln!(
        "bench: building a dev hub with {fids} fids x {} messages ...",
        args.messages_per_fid
    );
    let devhub = DevHubChild::start(
        &config,
        &[
            "--fids".into(),
            fids.to_string(),
            "--messages-per-fid".into(),
            args.messages_per_fid.to_string(),
            "--shards".into(),
            args.shards.to_string(),
            "--seed".into(),
            args.seed.to_string(),
            "--live-rate".into(),
            args.live_rate.to_string(),
        ],
    )
    .await?;

    let result = measure(&args, config.clone()).await;
    devhub.stop();
    if !args.keep {
        cleanup(&config).await;
    }
    let figures = result?;
    print(&args, &figures);
    Ok(ExitCode::SUCCESS)
}

struct Figures {
    messages: u64,
    catch_up: Duration,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    rss_samples_mib: Vec<f64>,
    lag_p50_ms: Option<u32>,
    lag_p99_ms: Option<u32>,
    lag_max_ms: Option<u32>,
    steady_messages_per_second: f64,
}

async fn measure(args: &StreamBenchArgs, config: Config) -> anyhow::Result<Figures> {
    let hub_info = hub::Client::new(hub::options_from_config(&config.hub))?
        .info()
        .await?;
    let service = Service::start(Role::Both, config, None).await?;
    let runtime = service.runtime().clone();
    let started = Instant::now();
    let cpu_start = process_cpu_seconds();
    let mut rss_samples = Vec::new();
    let mut peak_rss = 0.0f64;

    // Catch-up: the history is every block the hub had when we started. It is published once
    // every shard's cursor reached that height, and caught up once everything published by
    // then is applied (live events keep arriving meanwhile, as they would).
    let heights: Vec<(u32, u64)> = hub_info
        .shard_infos
        .iter()
        .filter(|info| info.shard_id > 0)
        .map(|info| (info.shard_id, info.max_height))
        .collect();
    let mut history_published: Option<u64> = None;
    let catch_up = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss = current_rss_mib();
        peak_rss = peak_rss.max(rss);
        rss_samples.push(rss);
        let published = counter_total(&runtime, crate::metrics::STREAM_PUBLISHED_ENTRIES_TOTAL);
        let consumed = counter_total(&runtime, crate::metrics::STREAM_CONSUMED_ENTRIES_TOTAL);
        if rss_samples.len() % 25 == 0 {
            eprintln!(
                "bench: {:>5.1}s published {published} applied {consumed} rss {rss:.0} MiB",
                started.elapsed().as_secs_f64()
            );
        }
        if history_published.is_none() {
            let shards = runtime.shards();
            let done = heights.iter().all(|(shard, height)| {
                shards
                    .get(shard)
                    .and_then(|health| health.cursor)
                    .is_some_and(|cursor| crate::hub::ids::event_block(cursor) + 1 >= *height)
            });
            if done {
                history_published = Some(published);
            }
        }
        if let Some(target) = history_published
            && consumed >= target
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("no catch-up within an hour");
        }
    };
    let cpu_seconds = process_cpu_seconds() - cpu_start;
    let messages = counter_total(&runtime, crate::metrics::STREAM_CONSUMED_ENTRIES_TOTAL);
    eprintln!(
        "bench: caught up on {messages} messages in {:.1}s",
        catch_up.as_secs_f64()
    );

    // Live events kept arriving during the catch-up (and the hub dropped some for us, as a
    // node does for a slow subscriber; repair fetches them). Measure the steady state only
    // once the subscribers are at the hub's head and the consumers have applied it all.
    let settle_started = Instant::now();
    let hub = hub::Client::new(hub::options_from_config(&runtime.config().hub))?;
    loop {
        let info = hub.info().await?;
        let shards = runtime.shards();
        let at_head = info.shard_infos.iter().filter(|i| i.shard_id > 0).all(|i| {
            shards
                .get(&i.shard_id)
                .and_then(|health| health.cursor)
                .is_some_and(|cursor| crate::hub::ids::event_block(cursor) + 3 >= i.max_height)
        });
        let published = counter_total(&runtime, crate::metrics::STREAM_PUBLISHED_ENTRIES_TOTAL);
        let consumed = counter_total(&runtime, crate::metrics::STREAM_CONSUMED_ENTRIES_TOTAL);
        if at_head && consumed + (args.live_rate as u64) >= published {
            break;
        }
        if settle_started.elapsed() > Duration::from_secs(600) {
            bail!("the pipeline did not reach the hub's head within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "bench: at the hub's head {:.1}s after the catch-up",
        settle_started.elapsed().as_secs_f64()
    );

    // Steady state at the live rate.
    runtime.record_lag_samples();
    let consumed_before = counter_total(&runtime, crate::metrics::STREAM_CONSUMED_ENTRIES_TOTAL);
    let steady_started = Instant::now();
    while steady_started.elapsed() < Duration::from_secs(args.steady_seconds) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss = current_rss_mib();
        peak_rss = peak_rss.max(rss);
        rss_samples.push(rss);
    }
    let consumed_after = counter_total(&runtime, crate::metrics::STREAM_CONSUMED_ENTRIES_TOTAL);
    let mut lags = runtime.take_lag_samples();
    lags.sort_unstable();
    let quantile = |q: f64| -> Option<u32> {
        (!lags.is_empty()).then(|| lags[((lags.len() - 1) as f64 * q).round() as usize])
    };
    let figures = Figures {
        messages,
        catch_up,
        cpu_seconds,
        peak_rss_mib: peak_rss.max(peak_rss_mib()),
        rss_samples_mib: rss_samples,
        lag_p50_ms: quantile(0.5),
        lag_p99_ms: quantile(0.99),
        lag_max_ms: lags.last().copied(),
        steady_messages_per_second: (consumed_after - consumed_before) as f64
            / steady_started.elapsed().as_secs_f64(),
    };
    service.shutdown().await.ok();
    Ok(figures)
}

fn print(args: &StreamBenchArgs, figures: &Figures) {
    let rate = figures.messages as f64 / figures.catch_up.as_secs_f64().max(1e-9);
    let cpu_percent = 100.0 * figures.cpu_seconds / figures.catch_up.as_secs_f64().max(1e-9);
    let quartiles: Vec<String> = [0.25, 0.5, 0.75, 1.0]
        .iter()
        .map(|q| {
            let samples = &figures.rss_samples_mib;
            let index = ((samples.len().saturating_sub(1)) as f64 * q) as usize;
            format!("{:.0}", samples.get(index).copied().unwrap_or(0.0))
        })
        .collect();
    let show = |value: Option<u32>| value.map_or("n/a".to_owned(), |ms| format!("{ms} ms"));
    println!(
        "waypoint bench stream (verification {})",
        if args.no_verify { "off" } else { "on" }
    );
    println!(
        "  catch-up: {} messages in {:.1} s = {:.0} messages/s",
        figures.messages,
        figures.catch_up.as_secs_f64(),
        rate
    );
    println!(
        "  cpu (this process, catch-up): {:.0}% of one core",
        cpu_percent
    );
    println!(
        "  peak rss: {:.0} MiB; rss at 25/50/75/100% of the run: {} MiB",
        figures.peak_rss_mib,
        quartiles.join(" / ")
    );
    println!(
        "  steady state at {} messages/s for {} s: applied {:.0} messages/s, hub-to-row lag p50 {}, p99 {}, max {}",
        args.live_rate,
        args.steady_seconds,
        figures.steady_messages_per_second,
        show(figures.lag_p50_ms),
        show(figures.lag_p99_ms),
        show(figures.lag_max_ms)
    );
    if args.json {
        println!(
            "{}",
            json!({
                "messages": figures.messages,
                "catch_up_seconds": figures.catch_up.as_secs_f64(),
                "messages_per_second": rate,
                "cpu_percent": cpu_percent,
                "peak_rss_mib": figures.peak_rss_mib,
                "rss_quartiles_mib": quartiles,
                "live_rate": args.live_rate,
                "steady_messages_per_second": figures.steady_messages_per_second,
                "lag_p50_ms": figures.lag_p50_ms,
                "lag_p99_ms": figures.lag_p99_ms,
                "lag_max_ms": figures.lag_max_ms,
                "verification": !args.no_verify,
            })
        );
    }
}
