//! `waypoint bench api`: the REST API over a filled database, measured.
//!
//! A dev hub child process serves `--fids` FIDs of about `--messages-per-fid` messages; a
//! backfill writes them into the scratch database (the default dataset holds over 100,000
//! casts with their reactions and links). The REST router then serves in this process with
//! `query.source = db-only` and no rate limit, and two phases run over HTTP on loopback:
//!
//! - **steady**: each of the key queries (a fid's casts, a profile, a fid's followers) alone
//!   at `--rate` requests/s for `--seconds`, open loop: requests leave on a fixed schedule and
//!   latency counts from the scheduled moment, so a stall is not hidden by requests that
//!   were never sent;
//! - **max**: `--clients` clients in a closed loop on each benchmarked endpoint alone for
//!   `--seconds`: the most the API does on this machine, per endpoint.
//!
//! `--json` prints one JSON object on the last line (`requests_per_second`, `p99_ms`, ...).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;

use super::backfill::queue_every_fid;
use super::{DevHubChild, cleanup, free_port, scratch};
use crate::cli::proc::peak_rss_mib;
use crate::config::Config;
use crate::query::SourcePolicy;
use crate::runtime::{BackfillPlan, Plan};
use crate::service::Service;

/// `waypoint bench api`.
#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// FIDs on the dev hub
    #[arg(long, default_value_t = 700)]
    pub fids: u64,
    /// Average messages per FID
    #[arg(long, default_value_t = 500)]
    pub messages_per_fid: u32,
    /// Requests per second of each steady phase
    #[arg(long, default_value_t = 2_000)]
    pub rate: u32,
    /// Seconds of each phase
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Clients of the maximum-throughput phase
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Dataset seed
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print the results as one JSON object on the last line
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch database and Redis keys (for inspection)
    #[arg(long)]
    pub keep: bool,
}

/// Requests in flight at once in a steady phase; more than this counts as the server falling
/// behind (they wait, and their latency shows it).
const STEADY_IN_FLIGHT: usize = 512;
/// Sample ids per endpoint, spread over the data.
const SAMPLES: i64 = 200;

/// The latencies of one endpoint in one phase.
struct Measured {
    endpoint: &'static str,
    requests: usize,
    errors: usize,
    seconds: f64,
    /// Sorted, microseconds.
    latencies: Vec<u64>,
}

impl Measured {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1] as f64 / 1000.0
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_second": self.rate(),
            "p50_ms": self.percentile_ms(50.0),
            "p99_ms": self.percentile_ms(99.0),
            "max_ms": self.percentile_ms(100.0),
        })
    }
}

/// An endpoint and the paths it is asked for.
struct Endpoint {
    name: &'static str,
    paths: Vec<String>,
    steady: bool,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ApiBenchArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    if args.fids == 0 || args.messages_per_fid == 0 || args.rate == 0 || args.seconds == 0 {
        bail!("--fids, --messages-per-fid, --rate and --seconds must be positive");
    }
    scratch(&mut config, false)?;
    config.hub.max_requests_per_second = 0;
    config.query.source = SourcePolicy::DbOnly;
    config.rest.rate_limit_per_second = 0;
    config.rest.compression = false;
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
            "--seed".into(),
            args.seed.to_string(),
        ],
    )
    .await?;
    let result = async {
        fill(&config).await?;
        devhub.stop();
        measure(&args, &config).await
    }
    .await;
    if !args.keep {
        cleanup(&config).await;
    }
    let (rows, steady, max) = result?;
    print(&args, &rows, &steady, &max);
    Ok(ExitCode::SUCCESS)
}

/// Backfills the whole dev hub into the scratch database.
async fn fill(config: &Config) -> anyhow::Result<()> {
    let queue = queue_every_fid(config).await?;
    let plan = BackfillPlan {
        concurrency: config.backfill.concurrency,
        exit_when_idle: None,
        queue_everything_once: false,
    };
    let service = Service::start_plan(Plan::backfill_only(plan), config.clone(), None).await?;
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let books = queue.books(0).await?;
        if books.is_idle() {
            eprintln!(
                "bench: backfilled {} messages in {:.1}s",
                books.messages,
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("the backfill did not finish within an hour");
        }
    }
    service.shutdown().await.ok();
    Ok(())
}

/// Row counts of the filled database, for the report.
struct Rows {
    casts: i64,
    reactions: i64,
    links: i64,
}

type Phases = (Rows, Vec<Measured>, Vec<Measured>);

async fn measure(args: &ApiBenchArgs, config: &Config) -> anyhow::Result<Phases> {
    let pg = crate::store::Pg::connect(&config.database).await?;
    let client = pg.get().await?;
    let count = |table: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE deleted_at IS NULL"),
                    &[],
                )
                .await?;
            anyhow::Ok(row.get::<_, i64>(0))
        }
    };
    let rows = Rows {
        casts: count("casts").await?,
        reactions: count("reactions").await?,
        links: count("links").await?,
    };
    eprintln!(
        "bench: {} live casts, {} reactions, {} links",
        rows.casts, rows.reactions, rows.links
    );
    let sample = |sql: &'static str| {
        let client = &client;
        async move {
            let found = client.query(sql, &[&SAMPLES]).await?;
            anyhow::Ok(
                found
                    .iter()
                    .map(|row| row.get::<_, i64>(0))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let casting = sample(
        "SELECT fid FROM casts WHERE deleted_at IS NULL GROUP BY fid ORDER BY random() LIMIT $1",
    )
    .await?;
    let followed = sample(
        "SELECT target_fid FROM links WHERE deleted_at IS NULL AND type = 'follow' \
         GROUP BY target_fid ORDER BY random() LIMIT $1",
    )
    .await?;
    let profiled = sample(
        "SELECT fid FROM user_data WHERE deleted_at IS NULL GROUP BY fid ORDER BY random() LIMIT $1",
    )
    .await?;
    let replied = client
        .query(
            "SELECT parent_fid, encode(parent_hash, 'hex') FROM casts \
             WHERE deleted_at IS NULL AND parent_hash IS NOT NULL ORDER BY random() LIMIT $1",
            &[&SAMPLES],
        )
        .await?;
    let words = client
        .query(
            "SELECT w FROM (SELECT split_part(text, ' ', 1) AS w FROM casts \
             WHERE deleted_at IS NULL AND text ~ '^[A-Za-z]{4,} ' LIMIT 1000) t \
             GROUP BY w ORDER BY count(*) DESC LIMIT 20",
            &[],
        )
        .await?;
    drop(client);
    pg.close();
    if casting.is_empty() || followed.is_empty() || profiled.is_empty() {
        bail!("the filled database has no casts, follows or profiles to ask for");
    }
    let paths = |ids: &[i64], template: &str| -> Vec<String> {
        ids.iter()
            .map(|id| template.replace("{}", &id.to_string()))
            .collect()
    };
    let mut endpoints = vec![
        Endpoint {
            name: "casts/by-fid",
            paths: paths(&casting, "/api/v1/casts/by-fid/{}?limit=25"),
            steady: true,
        },
        Endpoint {
            name: "users",
            paths: paths(&profiled, "/api/v1/users/{}"),
            steady: true,
        },
        Endpoint {
            name: "links/by-target",
            paths: paths(&followed, "/api/v1/links/by-target/{}?limit=25"),
            steady: true,
        },
        Endpoint {
            name: "casts/by-mention",
            paths: paths(&profiled, "/api/v1/casts/by-mention/{}?limit=25"),
            steady: false,
        },
        Endpoint {
            name: "feed/following",
            paths: paths(&casting, "/api/v1/feed/following/{}?limit=25"),
            steady: false,
        },
    ];
    if !replied.is_empty() {
        endpoints.push(Endpoint {
            name: "casts/by-parent",
            paths: replied
                .iter()
                .map(|row| {
                    format!(
                        "/api/v1/casts/by-parent/{}/{}?limit=25",
                        row.get::<_, i64>(0),
                        row.get::<_, String>(1)
                    )
                })
                .collect(),
            steady: false,
        });
    }
    if !words.is_empty() {
        endpoints.push(Endpoint {
            name: "casts/search",
            paths: words
                .iter()
                .map(|row| {
                    format!(
                        "/api/v1/casts/search?q={}&limit=25",
                        row.get::<_, String>(0)
                    )
                })
                .collect(),
            steady: false,
        });
    }

    // The server: the REST router over the scratch database, in this process.
    let pg = crate::store::Pg::connect(&config.database).await?;
    let data = crate::query::DataContext::new(
        SourcePolicy::DbOnly,
        None,
        Some(crate::query::db::DbReader { pg: pg.clone() }),
        crate::query::Breaker::new(3, Duration::from_secs(5), Duration::from_secs(60)),
    );
    let port = free_port()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = crate::api::rest::router(data, &config.rest, None);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://127.0.0.1:{port}");
    // reqwest is built without a crypto provider of its own: use ring, as tonic does (it
    // insists on one even for plain http).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(STEADY_IN_FLIGHT)
        .build()
        .context("http client")?;
    warm_up(&http, &base, &endpoints).await?;

    let duration = Duration::from_secs(args.seconds);
    let mut steady = Vec::new();
    for endpoint in endpoints.iter().filter(|endpoint| endpoint.steady) {
        eprintln!(
            "bench: steady {} at {} requests/s for {}s ...",
            endpoint.name, args.rate, args.seconds
        );
        steady.push(open_loop(&http, &base, endpoint, args.rate, duration).await);
    }
    // Each endpoint alone: a slow one (a search for a common word ranks every match) would
    // otherwise hold the pool and hide what the others can do.
    let mut max = Vec::new();
    for endpoint in &endpoints {
        eprintln!(
            "bench: maximum throughput of {}, {} clients for {}s ...",
            endpoint.name, args.clients, args.seconds
        );
        max.extend(
            closed_loop(
                &http,
                &base,
                std::slice::from_ref(endpoint),
                args.clients,
                duration,
            )
            .await,
        );
    }
    server.abort();
    pg.close();
    Ok((rows, steady, max))
}

/// One request, its body read whole; whether it succeeded (a 2xx status).
async fn get(http: &reqwest::Client, url: &str) -> bool {
    match http.get(url).send().await {
        Ok(response) => {
            let ok = response.status().is_success();
            // Read the whole body: that is part of the answer.
            response.bytes().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

/// Asks every path once (caches, prepared statements), and fails early if the API does not
/// answer.
async fn warm_up(http: &reqwest::Client, base: &str, endpoints: &[Endpoint]) -> anyhow::Result<()> {
    for endpoint in endpoints {
        let mut failed = 0;
        for path in &endpoint.paths {
            if !get(http, &format!("{base}{path}")).await {
                failed += 1;
            }
        }
        if failed == endpoint.paths.len() {
            bail!("every request to {} failed", endpoint.name);
        }
    }
    Ok(())
}

async fn open_loop(
    http: &reqwest::Client,
    base: &str,
    endpoint: &Endpoint,
    rate: u32,
    duration: Duration,
) -> Measured {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = (duration.as_secs_f64() * f64::from(rate)) as usize;
    let in_flight = Arc::new(Semaphore::new(STEADY_IN_FLIGHT));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let url = format!("{base}{}", endpoint.paths[n % endpoint.paths.len()]);
        let http = http.clone();
        let in_flight = in_flight.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await.ok();
            let ok = get(&http, &url).await;
            (ok, due.elapsed().as_micros() as u64)
        }));
    }
    collect(endpoint.name, tasks, started).await
}

async fn closed_loop(
    http: &reqwest::Client,
    base: &str,
    endpoints: &[Endpoint],
    clients: usize,
    duration: Duration,
) -> Vec<Measured> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for client in 0..clients.max(1) {
        let http = http.clone();
        // Each client takes the endpoints in turn (so each is measured, slow or fast), and
        // within one its paths in turn.
        let urls: Vec<Vec<String>> = endpoints
            .iter()
            .map(|endpoint| {
                endpoint
                    .paths
                    .iter()
                    .map(|path| format!("{base}{path}"))
                    .collect()
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut results: Vec<(usize, bool, u64)> = Vec::new();
            let mut n = client;
            while Instant::now() < deadline {
                let index = n % urls.len();
                let paths = &urls[index];
                let url = &paths[(n / urls.len() + client) % paths.len()];
                n += 1;
                let sent = Instant::now();
                let ok = get(&http, url).await;
                results.push((index, ok, sent.elapsed().as_micros() as u64));
            }
            results
        }));
    }
    let mut per_endpoint: Vec<Measured> = endpoints
        .iter()
        .map(|endpoint| Measured {
            endpoint: endpoint.name,
            requests: 0,
            errors: 0,
            seconds: 0.0,
            latencies: Vec::new(),
        })
        .collect();
    for task in tasks {
        for (index, ok, micros) in task.await.unwrap_or_default() {
            let measured = &mut per_endpoint[index];
            measured.requests += 1;
            if !ok {
                measured.errors += 1;
            }
            measured.latencies.push(micros);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for measured in &mut per_endpoint {
        measured.seconds = seconds;
        measured.latencies.sort_unstable();
    }
    per_endpoint
}

async fn collect(
    endpoint: &'static str,
    tasks: Vec<tokio::task::JoinHandle<(bool, u64)>>,
    started: Instant,
) -> Measured {
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok((ok, micros)) => {
                if !ok {
                    errors += 1;
                }
                latencies.push(micros);
            }
            Err(_) => errors += 1,
        }
    }
    latencies.sort_unstable();
    Measured {
        endpoint,
        requests: latencies.len(),
        errors,
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    }
}

fn print(args: &ApiBenchArgs, rows: &Rows, steady: &[Measured], max: &[Measured]) {
    println!(
        "waypoint bench api (database source; {} casts, {} reactions, {} links)",
        rows.casts, rows.reactions, rows.links
    );
    println!("  steady, {} requests/s each:", args.rate);
    for measured in steady {
        println!(
            "    {:<20} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  errors {}",
            measured.endpoint,
            measured.rate(),
            measured.percentile_ms(50.0),
            measured.percentile_ms(99.0),
            measured.percentile_ms(100.0),
            measured.errors
        );
    }
    // The figure to quote: the slowest of the key queries' maxima.
    let max_rate = max
        .iter()
        .filter(|measured| steady.iter().any(|s| s.endpoint == measured.endpoint))
        .map(Measured::rate)
        .fold(f64::INFINITY, f64::min);
    let max_rate = if max_rate.is_finite() { max_rate } else { 0.0 };
    println!(
        "  maximum, {} clients, each endpoint alone (key queries: at least {max_rate:.0} requests/s):",
        args.clients
    );
    for measured in max {
        println!(
            "    {:<20} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
            measured.endpoint,
            measured.rate(),
            measured.percentile_ms(50.0),
            measured.percentile_ms(99.0),
            measured.errors
        );
    }
    println!("  peak rss (this process): {:.0} MiB", peak_rss_mib());
    if args.json {
        let steady_p99 = steady
            .iter()
            .map(|measured| measured.percentile_ms(99.0))
            .fold(0.0, f64::max);
        let endpoint_figures = |measured: &[Measured]| {
            measured
                .iter()
                .map(|m| (m.endpoint.to_owned(), m.json()))
                .collect::<serde_json::Map<_, _>>()
        };
        println!(
            "{}",
            json!({
                "requests_per_second": max_rate,
                "p99_ms": steady_p99,
                "steady_rate": args.rate,
                "steady": endpoint_figures(steady),
                "max": endpoint_figures(max),
                "casts": rows.casts,
                "reactions": rows.reactions,
                "links": rows.links,
                "peak_rss_mib": peak_rss_mib(),
            })
        );
    }
}
