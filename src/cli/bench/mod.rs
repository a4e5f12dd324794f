//! `waypoint bench ...`: benchmarks that print figures. Each runs a dev hub as a child process
//! (its memory is not counted, its CPU is reported apart) and Waypoint in this process, against
//! the configured PostgreSQL and Redis, in a scratch database and key prefix removed afterwards.

pub mod api;
pub mod backfill;
pub mod stream;

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::hub;

/// A dev hub child process, serving.
pub(super) struct DevHubChild {
    child: tokio::process::Child,
}

impl DevHubChild {
    /// Starts `waypoint devhub --listen <hub url's address> <args>` and waits until it answers.
    pub(super) async fn start(config: &Config, args: &[String]) -> anyhow::Result<DevHubChild> {
        let listen = config
            .hub
            .url
            .strip_prefix("http://")
            .context("the bench's hub url is http://")?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["devhub", "--listen", listen])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the dev hub")?;
        let hub = hub::Client::new(hub::options_from_config(&config.hub))?;
        let build_started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the dev hub exited while building: {status}");
            }
            if hub.info().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "bench: dev hub ready after {:.1}s",
            build_started.elapsed().as_secs_f64()
        );
        Ok(DevHubChild { child })
    }

    /// CPU seconds the dev hub used so far.
    pub(super) fn cpu_seconds(&self) -> f64 {
        self.child.id().map_or(0.0, |pid| {
            super::proc::cpu_seconds_of(&format!("/proc/{pid}/stat"))
        })
    }

    pub(super) fn stop(mut self) {
        let _ = self.child.start_kill();
    }
}

/// Points `config` at a scratch database, key prefix and ports; `verify` switches message
/// verification.
pub(super) fn scratch(config: &mut Config, verify: bool) -> anyhow::Result<()> {
    let scratch = format!("waypoint_bench_{:08x}", rand::random::<u32>());
    config.database.url = replace_database(&config.database.url, &scratch)?;
    config.redis.prefix = scratch.replace('_', "-");
    config.hub.verify_messages = verify;
    config.health.port = free_port()?;
    // The pipeline benchmarks measure the pipeline; `bench api` serves its own.
    config.rest.enabled = false;
    config.mcp.enabled = false;
    config.hub.url = format!("http://127.0.0.1:{}", free_port()?);
    Ok(())
}

/// Removes the scratch database and keys.
pub(super) async fn cleanup(config: &Config) {
    if let Err(error) = crate::store::drop_database(&config.database).await {
        eprintln!("bench: could not drop the scratch database: {error}");
    }
    if let Ok(redis) = crate::streams::Redis::connect(&config.redis).await
        && let Err(error) = redis.delete_prefix().await
    {
        eprintln!("bench: could not delete the scratch keys: {error}");
    }
}

/// The sum of a counter over its labels, from the Prometheus exposition.
pub(super) fn counter_total(runtime: &crate::runtime::Runtime, name: &str) -> u64 {
    runtime
        .metrics()
        .render()
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| line[name.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn replace_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).with_context(|| format!("database.url {url:?}"))?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
