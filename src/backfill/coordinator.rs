//! `coordinator`: keeps the backfill queue moving and says how far it is.
//!
//! - Leases that ran out (their worker died) go back to the queue, or to the failed list when
//!   their job is out of attempts.
//! - A retention marker (`<prefix>:backfill:needed:<shard>`, left by `repair` when a shard's
//!   cursor fell behind the hub's event retention) is claimed by one coordinator, which
//!   queues every FID of that shard; once those jobs completed the marker is deleted (unless
//!   it changed meanwhile) and the shard stops reporting that it needs a backfill.
//! - `start --backfill` queues every registered FID once per database (recorded in
//!   `waypoint_meta`), so one command gives a full replica.
//! - Progress: the books go to `/ready` (`Runtime::backfill_status`), to the backfill gauges,
//!   and to a structured log line every [`PROGRESS_LOG_INTERVAL`] while work remains (unless a
//!   terminal progress bar shows them).
//! - `--exit-on-complete`: once the books show nothing queued, waiting or running, and this
//!   process's workers were idle for the idle timeout, the process is asked to exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use waypoint_actors::{Actor, ActorError, Context};

use super::queue::{Books, JobKind, Queue};
use super::{Activity, BackfillError, COORDINATOR_TICK, fids};
use crate::metrics::{BACKFILL_FIDS, BACKFILL_JOBS, HUB_BACKFILL_NEEDED, LABEL_SHARD, LABEL_STATE};
use crate::runtime::{BackfillPlan, BackfillStatus, Runtime};
use crate::store::meta;

/// How often expired leases are looked for, at most (and at least every third of the
/// visibility timeout).
const EXPIRED_CHECK_MAX: Duration = Duration::from_secs(10);
/// How often the shards' retention markers are looked at.
const MARKER_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How often a progress line is logged while work remains.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause before trying the first full queue again after it failed.
const QUEUE_EVERYTHING_RETRY: Duration = Duration::from_secs(30);
/// The `waypoint_meta` key recording that every FID was queued once for this database.
const QUEUED_EVERY_FID: &str = "backfill.queued_every_fid";

pub(crate) enum Msg {
    /// Look at the books (timer).
    Tick,
    /// Queue every registered FID, once per database.
    QueueEverything,
}

pub(crate) struct State {
    queue: Queue,
    last_expired_check: Option<Instant>,
    last_marker_check: Option<Instant>,
    last_progress_log: Option<Instant>,
    /// The books showed work at the last tick.
    was_running: bool,
    /// Since when nothing was queued or running (for `--exit-on-complete`).
    idle_since: Option<Instant>,
    /// The first full queue is still to do.
    queueing_everything: bool,
    num_shards: Option<u32>,
}

/// The coordinator of the backfill subtree.
pub(crate) struct Coordinator {
    pub runtime: Runtime,
    pub plan: BackfillPlan,
    pub activity: Arc<Activity>,
}

impl Actor for Coordinator {
    type Msg = Msg;
    type State = State;
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<State, ActorError> {
        if self.plan.queue_everything_once {
            let _ = ctx.send_self(Msg::QueueEverything);
        }
        let _ = ctx.send_self(Msg::Tick);
        Ok(State {
            queue: Queue::new(self.runtime.redis()),
            last_expired_check: None,
            last_marker_check: None,
            last_progress_log: None,
            was_running: false,
            idle_since: None,
            queueing_everything: self.plan.queue_everything_once,
            num_shards: None,
        })
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Tick => {
                self.on_tick(state).await;
                ctx.send_self_after(COORDINATOR_TICK, Msg::Tick);
            }
            Msg::QueueEverything => self.on_queue_everything(ctx, state).await,
        }
        Ok(())
    }
}

impl Coordinator {
    async fn on_tick(&self, state: &mut State) {
        let config = self.runtime.config();
        let visibility = Duration::from_secs(config.backfill.visibility_timeout_seconds);
        let expired_every = (visibility / 3).min(EXPIRED_CHECK_MAX);
        if due(state.last_expired_check, expired_every) {
            state.last_expired_check = Some(Instant::now());
            match state
                .queue
                .return_expired(config.backfill.max_attempts)
                .await
            {
                Ok(returned) => {
                    for job in returned {
                        tracing::warn!(job = job.id, worker = %job.owner, to_failed = job.failed, "backfill lease expired: the job's worker stopped renewing it");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot check backfill leases"),
            }
        }
        if due(state.last_marker_check, MARKER_CHECK_INTERVAL) {
            state.last_marker_check = Some(Instant::now());
            self.check_markers(state).await;
        }
        let books = match state.queue.books(0).await {
            Ok(books) => books,
            Err(error) => {
                tracing::warn!(%error, "cannot read the backfill books");
                return;
            }
        };
        self.report(state, &books);
        self.check_exit(state, &books);
    }

    /// Status, gauges, and the progress log line.
    fn report(&self, state: &mut State, books: &Books) {
        let running = !books.is_idle();
        let status = BackfillStatus {
            running,
            fids_done: books.fids_done + books.fids_in_progress_done,
            fids_total: books.fids_done + books.fids_pending + books.fids_failed,
            fids_failed: books.fids_failed,
            jobs_queued: books.jobs_queued,
            jobs_in_progress: books.jobs_in_progress,
            jobs_failed: books.jobs_failed,
            fids_per_second: books.fids_per_second,
            messages_per_second: books.messages_per_second,
            eta_seconds: books.eta_seconds,
        };
        for (gauge_state, value) in [
            ("queued", books.jobs_queued),
            ("delayed", books.jobs_delayed),
            ("in_progress", books.jobs_in_progress),
            ("failed", books.jobs_failed),
            ("completed", books.jobs_completed),
        ] {
            metrics::gauge!(BACKFILL_JOBS, LABEL_STATE => gauge_state).set(value as f64);
        }
        for (gauge_state, value) in [
            ("done", books.fids_done),
            ("pending", books.fids_pending),
            ("failed", books.fids_failed),
        ] {
            metrics::gauge!(BACKFILL_FIDS, LABEL_STATE => gauge_state).set(value as f64);
        }
        if running && !state.was_running {
            tracing::info!(
                fids_pending = books.fids_pending,
                jobs_queued = books.jobs_queued,
                "backfill running"
            );
        }
        let log_due = due(state.last_progress_log, PROGRESS_LOG_INTERVAL);
        if running && log_due && !crate::logging::progress_bar_shown() {
            state.last_progress_log = Some(Instant::now());
            tracing::info!(
                fids_done = status.fids_done,
                fids_total = status.fids_total,
                fids_failed = status.fids_failed,
                jobs_queued = books.jobs_queued,
                jobs_delayed = books.jobs_delayed,
                jobs_in_progress = books.jobs_in_progress,
                fids_per_second = round(books.fids_per_second),
                messages_per_second = round(books.messages_per_second),
                eta_seconds = books.eta_seconds,
                "backfill progress"
            );
        }
        if !running && state.was_running {
            tracing::info!(
                fids_done = books.fids_done,
                fids_failed = books.fids_failed,
                jobs_failed = books.jobs_failed,
                messages = books.messages,
                "backfill queue empty"
            );
        }
        state.was_running = running;
        self.runtime.set_backfill_status(status);
    }

    fn check_exit(&self, state: &mut State, books: &Books) {
        let Some(idle_timeout) = self.plan.exit_when_idle else {
            return;
        };
        let idle = books.is_idle() && self.activity.busy() == 0 && !state.queueing_everything;
        if !idle {
            state.idle_since = None;
            return;
        }
        let since = *state.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= idle_timeout {
            if books.jobs_failed > 0 {
                tracing::warn!(
                    jobs_failed = books.jobs_failed,
                    fids_failed = books.fids_failed,
                    "backfill finished with failed jobs: `waypoint backfill fid inspect` lists them, `retry-failed` queues them again"
                );
            }
            self.runtime.request_exit("backfill complete");
        }
    }

    /// Claims and works off the shards' retention markers.
    async fn check_markers(&self, state: &mut State) {
        let Some(hub) = self.runtime.hub() else {
            return;
        };
        let num_shards = match state.num_shards {
            Some(num_shards) => num_shards,
            None => match hub.info().await {
                Ok(info) => *state.num_shards.insert(info.num_shards),
                Err(error) => {
                    tracing::debug!(%error, "hub unreachable, retention markers checked later");
                    return;
                }
            },
        };
        for shard in 1..=num_shards {
            if let Err(error) = self.check_marker(state, &hub, shard).await {
                tracing::warn!(shard, %error, "cannot work off the shard's retention marker yet");
            }
        }
    }

    async fn check_marker(
        &self,
        state: &State,
        hub: &crate::hub::Client,
        shard: u32,
    ) -> Result<(), BackfillError> {
        let Some(value) = state.queue.retention_marker(shard).await? else {
            return Ok(());
        };
        match state.queue.marker_work(shard).await? {
            Some(work) if work.value == value && work.queued => {
                if work.outstanding > 0
                    || (work.wait_for_idle && !state.queue.books(0).await?.is_idle())
                {
                    return Ok(());
                }
                if work.failed > 0 {
                    tracing::warn!(
                        shard,
                        failed_jobs = work.failed,
                        "some of the shard's backfill jobs failed: `waypoint backfill fid inspect` lists them, `retry-failed` runs them again"
                    );
                }
                if state.queue.clear_marker(shard, &value).await? {
                    tracing::info!(
                        shard,
                        "the shard's backfill finished: its retention marker is cleared"
                    );
                    metrics::gauge!(HUB_BACKFILL_NEEDED, LABEL_SHARD => shard.to_string()).set(0.0);
                    self.runtime
                        .update_shard(shard, |health| health.backfill_needed = None);
                }
            }
            _ => {
                let Some(claim) = state.queue.claim_marker(shard, &value).await? else {
                    return Ok(());
                };
                let config = self.runtime.config();
                let fids = fids::registered(hub, &[shard], None).await?;
                // FIDs done before are done again: their events since were lost.
                let queued = state
                    .queue
                    .enqueue(
                        JobKind::Full,
                        &fids,
                        config.backfill.batch_size,
                        true,
                        Some((shard, claim)),
                    )
                    .await?;
                state
                    .queue
                    .marker_queued(shard, queued.already_pending > 0)
                    .await?;
                tracing::warn!(
                    shard,
                    fids = fids.len(),
                    jobs = queued.jobs,
                    already_queued = queued.already_pending,
                    "the shard's cursor fell out of the hub's retention: its fids are queued for backfill"
                );
            }
        }
        Ok(())
    }

    /// Queues every registered FID once per database (`start --backfill`).
    async fn on_queue_everything(&self, ctx: &Context<Msg>, state: &mut State) {
        match self.queue_everything(state).await {
            Ok(()) => state.queueing_everything = false,
            Err(error) => {
                tracing::warn!(%error, retry_s = QUEUE_EVERYTHING_RETRY.as_secs(), "cannot queue every fid for backfill yet");
                ctx.send_self_after(QUEUE_EVERYTHING_RETRY, Msg::QueueEverything);
            }
        }
    }

    async fn queue_everything(&self, state: &State) -> Result<(), BackfillError> {
        let pg = self
            .runtime
            .pg()
            .ok_or(BackfillError::Missing("the database"))?;
        let hub = self
            .runtime
            .hub()
            .ok_or(BackfillError::Missing("a hub client"))?;
        let client = pg.get().await?;
        let claimed_at = format!("{:?}", std::time::SystemTime::now());
        if !meta::claim(&**client, QUEUED_EVERY_FID, &claimed_at).await? {
            // Queued before: unless Redis lost the queue since (restarted without persistence,
            // flushed, failed over to an empty replica), in which case its jobs are gone.
            let recorded = meta::get(&**client, QUEUED_EVERY_FID).await?;
            if recorded.is_some() && state.queue.epoch().await? == recorded {
                tracing::info!("every fid was queued for backfill once for this database already");
                return Ok(());
            }
            tracing::warn!(
                "the backfill queue in redis lost its books since every fid was queued; queueing every fid again"
            );
            meta::release(&**client, QUEUED_EVERY_FID).await?;
            if !meta::claim(&**client, QUEUED_EVERY_FID, &claimed_at).await? {
                // Another process just claimed it again.
                return Ok(());
            }
        }
        let queued = async {
            let fids = fids::all_registered(&hub, None).await?;
            let config = self.runtime.config();
            let queued = state
                .queue
                .enqueue(
                    JobKind::Full,
                    &fids,
                    config.backfill.batch_size,
                    false,
                    None,
                )
                .await?;
            Ok::<_, BackfillError>((fids.len(), queued))
        }
        .await;
        match queued {
            Ok((registered, queued)) => {
                tracing::info!(
                    registered,
                    fids = queued.fids,
                    jobs = queued.jobs,
                    already_done = queued.already_done,
                    already_queued = queued.already_pending,
                    "queued every registered fid for backfill"
                );
                state.queue.set_epoch(&claimed_at).await?;
                Ok(())
            }
            Err(error) => {
                // Not done: the next attempt (or start) queues again; queued FIDs are skipped.
                meta::release(&**client, QUEUED_EVERY_FID).await?;
                Err(error)
            }
        }
    }
}

fn due(last: Option<Instant>, every: Duration) -> bool {
    last.is_none_or(|last| last.elapsed() >= every)
}

fn round(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}
