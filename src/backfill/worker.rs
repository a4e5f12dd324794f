//! `worker:<n>`: takes a job from the queue, backfills its FIDs one after the other, and
//! records in one step which FIDs are done, which to retry and which the hub refuses.
//!
//! Invariants:
//! - the job's lease is renewed every third of the visibility timeout while it runs; a worker
//!   that learns its lease is lost abandons the job at once (another worker has it now);
//! - a FID is done only once its rows are committed and its reconciliation is written;
//! - a FID the hub refuses for good (NOT_FOUND, INVALID_ARGUMENT) goes to the failed list at
//!   once and the job goes on; one that keeps failing for a reason that may pass is retried
//!   with the job; after [`MAX_CONSECUTIVE_FAILURES`] such failures in a row (the hub or the
//!   database is down) the rest of the job waits for its next attempt too;
//! - on stop the worker gives the FIDs it has not finished back to the head of the queue
//!   (the attempt does not count); a restarted worker first gives back whatever its crashed
//!   incarnation held.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use waypoint_actors::{Actor, ActorError, Context};

use super::Activity;
use super::fetch;
use super::queue::{FinishState, Finished, Job, Outcome, Queue};
use super::{Writers, writer};
use crate::hub::{FidMessages, HubError};
use crate::metrics::{
    BACKFILL_FID_DURATION_SECONDS, BACKFILL_FIDS_TOTAL, BACKFILL_JOB_RETRIES_TOTAL,
    BACKFILL_JOBS_COMPLETED_TOTAL, BACKFILL_JOBS_FAILED_TOTAL, BACKFILL_MESSAGES_TOTAL,
    BACKFILL_ROWS_REMOVED_TOTAL, LABEL_TABLE,
};
use crate::runtime::Runtime;
use crate::store::reconcile::{self, HubAnswer};
use crate::store::rows::Batch;

/// A FID's rows are handed to the writer once this many messages were gathered (and at the
/// end of the FID): few, large writes per FID, and a bounded amount held per worker.
const LOCAL_BATCH_MESSAGES: u64 = 2_000;
/// Failures in a row, of FIDs of one job, after which the rest of the job waits too.
const MAX_CONSECUTIVE_FAILURES: usize = 3;
/// First pause before looking at an empty queue again.
const IDLE_POLL_INITIAL: Duration = Duration::from_millis(200);
/// Longest pause between looks at an empty queue.
const IDLE_POLL_MAX: Duration = Duration::from_secs(2);
/// First pause after the queue could not be reached.
const ERROR_RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest pause after the queue could not be reached.
const ERROR_RETRY_MAX: Duration = Duration::from_secs(10);

pub(crate) enum Msg {
    /// Take the next job and run it.
    Poll,
}

pub(crate) struct State {
    queue: Queue,
    owner: String,
    idle_delay: Duration,
    error_delay: Duration,
    /// The jobs a crashed incarnation held were given back.
    returned_own: bool,
}

/// One backfill worker.
pub(crate) struct Worker {
    pub index: usize,
    pub runtime: Runtime,
    pub writers: Writers,
    pub activity: Arc<Activity>,
}

/// Why a FID did not complete.
#[derive(Debug, thiserror::Error)]
enum FidError {
    #[error("{0}")]
    Hub(#[from] HubError),
    #[error("database: {0}")]
    Database(String),
    #[error("writing: {0}")]
    Write(String),
    #[error("stopping")]
    Stopped,
    #[error("the job's lease was lost")]
    LeaseLost,
}

impl FidError {
    /// The hub refuses this FID for good.
    fn is_final(&self) -> bool {
        matches!(self, FidError::Hub(error) if fetch::is_final(error))
    }
}

impl Actor for Worker {
    type Msg = Msg;
    type State = State;
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<State, ActorError> {
        let _ = ctx.send_self(Msg::Poll);
        Ok(State {
            queue: Queue::new(self.runtime.redis()),
            owner: format!("{}:backfill:{}", self.runtime.instance(), self.index),
            idle_delay: IDLE_POLL_INITIAL,
            error_delay: ERROR_RETRY_INITIAL,
            returned_own: false,
        })
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Poll => self.on_poll(ctx, state).await,
        }
    }
}

impl Worker {
    async fn on_poll(&self, ctx: &Context<Msg>, state: &mut State) -> Result<(), ActorError> {
        if ctx.is_stopping() {
            return Ok(());
        }
        let config = self.runtime.config();
        let lease = Duration::from_secs(config.backfill.visibility_timeout_seconds);
        // Whatever a crashed incarnation of this worker held goes back first (the owner name
        // is stable for the process), then take a job.
        let taken = async {
            if !state.returned_own {
                let returned = state
                    .queue
                    .return_owned(&state.owner, config.backfill.max_attempts)
                    .await?;
                for job in &returned {
                    tracing::warn!(job = job.id, worker = %state.owner, to_failed = job.failed, "gave back the job of a crashed worker");
                }
                state.returned_own = true;
            }
            state.queue.take(&state.owner, lease).await
        };
        let job = match taken.await {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!(%error, delay_ms = state.error_delay.as_millis() as u64, "backfill queue unreachable, retrying");
                ctx.send_self_after(state.error_delay, Msg::Poll);
                state.error_delay = (state.error_delay * 2).min(ERROR_RETRY_MAX);
                return Ok(());
            }
        };
        state.error_delay = ERROR_RETRY_INITIAL;
        let Some(job) = job else {
            ctx.send_self_after(state.idle_delay, Msg::Poll);
            state.idle_delay = (state.idle_delay * 2).min(IDLE_POLL_MAX);
            return Ok(());
        };
        state.idle_delay = IDLE_POLL_INITIAL;
        let on_job = self.activity.on_job();
        let result = self.run_job(ctx, state, &job, lease).await;
        drop(on_job);
        result?;
        let _ = ctx.send_self(Msg::Poll);
        Ok(())
    }

    /// Runs one job with its lease renewed meanwhile, and records how it ended.
    async fn run_job(
        &self,
        ctx: &Context<Msg>,
        state: &State,
        job: &Job,
        lease: Duration,
    ) -> Result<(), ActorError> {
        tracing::debug!(job = job.id, kind = %job.kind, fids = job.fids.len(), attempt = job.attempts, "backfill job taken");
        let lost = Arc::new(AtomicBool::new(false));
        // Aborted when the guard drops: at the end of the job, or when the worker panics (a
        // heartbeat that outlived its worker would hold the lease forever).
        let heartbeat = AbortOnDrop(tokio::spawn(renew_lease(
            state.queue.clone(),
            job.clone(),
            state.owner.clone(),
            lease,
            Arc::clone(&lost),
        )));
        let outcome = self.run_fids(ctx, state, job, &lost).await;
        drop(heartbeat);
        let Some(outcome) = outcome else {
            tracing::warn!(job = job.id, worker = %state.owner, "lost the lease of a backfill job, leaving it to its new owner");
            return Ok(());
        };
        let config = self.runtime.config();
        let finished = state
            .queue
            .finish(
                job,
                &state.owner,
                &outcome,
                super::attempts(&config.backfill),
            )
            .await;
        match finished {
            Ok(Finished::Recorded { outcome: how, .. }) => {
                record(job, &outcome, how);
                Ok(())
            }
            Ok(Finished::LeaseLost) => {
                tracing::warn!(
                    job = job.id,
                    "the job's lease ran out before it finished; it will run again"
                );
                Ok(())
            }
            // The rows are written; the lease runs out and the job runs again (idempotently).
            Err(error) if error.is_retryable() => {
                tracing::warn!(job = job.id, %error, "could not record a finished backfill job");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Backfills the job's FIDs; None when the lease was lost.
    async fn run_fids(
        &self,
        ctx: &Context<Msg>,
        state: &State,
        job: &Job,
        lost: &AtomicBool,
    ) -> Option<Outcome> {
        let mut outcome = Outcome::default();
        let mut consecutive_failures = 0;
        for (position, &fid) in job.fids.iter().enumerate() {
            if ctx.is_stopping() {
                outcome.retry.extend(&job.fids[position..]);
                outcome.release = true;
                break;
            }
            let started = Instant::now();
            match self.backfill_fid(ctx, job, fid, lost).await {
                Ok(messages) => {
                    metrics::histogram!(BACKFILL_FID_DURATION_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    outcome.done.push(fid);
                    outcome.messages += messages;
                    consecutive_failures = 0;
                    // Progress only: a failure here loses nothing (the job's finish counts).
                    match state.queue.progress(job, &state.owner, fid, messages).await {
                        Ok(true) => {}
                        Ok(false) => return None,
                        Err(error) => tracing::debug!(%error, "backfill progress not recorded"),
                    }
                }
                Err(FidError::LeaseLost) => return None,
                Err(FidError::Stopped) => {
                    outcome.retry.extend(&job.fids[position..]);
                    outcome.release = true;
                    break;
                }
                Err(error) if error.is_final() => {
                    tracing::warn!(fid, job = job.id, %error, "the hub refuses this fid; it goes to the failed list");
                    outcome.dead.push(fid);
                    append_error(&mut outcome.dead_error, fid, &error);
                }
                Err(error) => {
                    tracing::warn!(fid, job = job.id, attempt = job.attempts, %error, "backfill of a fid failed");
                    outcome.retry.push(fid);
                    append_error(&mut outcome.retry_error, fid, &error);
                    consecutive_failures += 1;
                    if consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                        outcome.retry.extend(&job.fids[position + 1..]);
                        break;
                    }
                }
            }
        }
        if lost.load(Ordering::SeqCst) {
            return None;
        }
        Some(outcome)
    }

    /// Everything the job's kind reads for one FID, written and reconciled; returns the
    /// messages written.
    async fn backfill_fid(
        &self,
        ctx: &Context<Msg>,
        job: &Job,
        fid: u64,
        lost: &AtomicBool,
    ) -> Result<u64, FidError> {
        let config = self.runtime.config();
        let hub = self.runtime.hub().ok_or_else(|| FidError::Hub(no_hub()))?;
        let pg = self
            .runtime
            .pg()
            .ok_or_else(|| FidError::Database("no database in this process".into()))?;
        let since = {
            let client = pg.get().await.map_err(database)?;
            reconcile::fetch_started(&**client)
                .await
                .map_err(database)?
        };
        let mut run = FidRun {
            fid,
            lost,
            verify: config.hub.verify_messages,
            store_messages: config.database.store_messages,
            answer: HubAnswer::new(fid, since),
            gathered: Gathered::default(),
        };
        // Spam FIDs: no messages, as on the live path; their on-chain events still count.
        if !self.runtime.spam().is_spam(fid) {
            for &(list, set) in fetch::message_lists(job.kind) {
                self.read_list(ctx, &hub, list, config.backfill.page_size, &mut run)
                    .await?;
                if let Some(set) = set {
                    run.answer.completed(set);
                }
            }
            if fetch::reads_proofs(job.kind) {
                for proof in hub.username_proofs(fid).await? {
                    run.answer.saw_name(
                        crate::replica::sanitize_text(&String::from_utf8_lossy(&proof.name))
                            .into_owned(),
                    );
                    run.gathered.batch.add_username_proof(&proof);
                }
                run.answer.completed(reconcile::AnswerSet::UsernameProofs);
            }
        }
        for event_type in fetch::onchain_types(job.kind) {
            for event in hub.onchain_events(fid, event_type).await?.events {
                run.gathered.batch.add_onchain_event(&event);
            }
        }
        run.check_lease()?;
        self.prepare(&mut run).await?;
        let written = run.gathered.written + run.gathered.messages;
        self.write(run.gathered.take()).await?;

        // Every row of the FID is committed: what the database still holds as live beyond
        // the hub's answer is gone from the hub.
        let gone = {
            let client = pg.get().await.map_err(database)?;
            reconcile::gone_rows(&client, &run.answer)
                .await
                .map_err(database)?
        };
        if !gone.is_empty() {
            tracing::info!(fid, removed = ?gone.by_table, "rows the hub no longer holds leave the live set");
            for (table, rows) in &gone.by_table {
                metrics::counter!(BACKFILL_ROWS_REMOVED_TOTAL, LABEL_TABLE => *table)
                    .increment(*rows);
            }
            self.write(Gathered::of(gone.batch)).await?;
        }
        metrics::counter!(BACKFILL_FIDS_TOTAL).increment(1);
        metrics::counter!(BACKFILL_MESSAGES_TOTAL).increment(written);
        Ok(written)
    }

    /// Reads every page of one list, handing the rows over as they gather. An answer too
    /// large for the receive limit is read again in smaller pages (the pages already written
    /// are written again, harmlessly); an optional list the hub does not serve is skipped.
    async fn read_list(
        &self,
        ctx: &Context<Msg>,
        hub: &crate::hub::Client,
        list: FidMessages,
        page_size: u32,
        run: &mut FidRun<'_>,
    ) -> Result<(), FidError> {
        let mut page_size = page_size;
        loop {
            match self.read_pages(ctx, hub, list, page_size, run).await {
                Err(FidError::Hub(error @ HubError::TooLarge { .. })) if page_size > 1 => {
                    page_size = (page_size / 2).max(1);
                    tracing::warn!(fid = run.fid, %error, page_size, "hub answer too large, reading again in smaller pages");
                }
                Err(FidError::Hub(HubError::Status {
                    code: tonic::Code::Unimplemented,
                    ..
                })) if fetch::is_optional(list) => {
                    tracing::debug!(
                        fid = run.fid,
                        method = list.method(),
                        "the hub does not serve this list; skipped"
                    );
                    return Ok(());
                }
                result => return result,
            }
        }
    }

    async fn read_pages(
        &self,
        ctx: &Context<Msg>,
        hub: &crate::hub::Client,
        list: FidMessages,
        page_size: u32,
        run: &mut FidRun<'_>,
    ) -> Result<(), FidError> {
        let mut pages = hub.fid_message_pages(list, run.fid, page_size);
        loop {
            let page = tokio::select! {
                page = pages.next() => page,
                () = ctx.stop_requested() => return Err(FidError::Stopped),
            };
            let Some(page) = page else {
                return Ok(());
            };
            let page = page?;
            run.check_lease()?;
            run.answer
                .saw_messages(page.iter().map(|message| message.hash.as_slice()));
            run.gathered.raw.extend(page);
            if run.gathered.raw.len() as u64 >= LOCAL_BATCH_MESSAGES {
                self.prepare(run).await?;
                self.write(run.gathered.take()).await?;
            }
        }
    }

    /// Verifies the messages gathered so far, all in one go (larger groups verify faster per
    /// signature than a page at a time), and turns the good ones into rows.
    async fn prepare(&self, run: &mut FidRun<'_>) -> Result<(), FidError> {
        if run.gathered.raw.is_empty() {
            return Ok(());
        }
        let raw = std::mem::take(&mut run.gathered.raw);
        let (verify, store_messages) = (run.verify, run.store_messages);
        let prepared =
            tokio::task::spawn_blocking(move || fetch::prepare(&raw, verify, store_messages))
                .await
                .map_err(|error| FidError::Write(format!("verification task: {error}")))?;
        for (hash, reason) in &prepared.rejected {
            tracing::warn!(fid = run.fid, hash = %hex::encode(hash), reason = reason.as_str(), error = %reason, "backfill message rejected");
        }
        run.gathered.add(prepared.batch, prepared.accepted);
        Ok(())
    }

    /// Hands rows to the writers of their parts and waits until all are committed.
    async fn write(&self, gathered: Gathered) -> Result<(), FidError> {
        let parts = gathered.batch.split();
        let calls = parts.into_iter().map(|(part, batch, rows)| async move {
            let Some(writer) = self.writers.get(&part) else {
                return Err(FidError::Write(format!("no writer for {}", part.as_str())));
            };
            match writer
                .call(
                    |reply| writer::Msg::Write {
                        batch: Box::new(batch),
                        rows,
                        reply,
                    },
                    None,
                )
                .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(FidError::Write(format!("{}: {error}", part.as_str()))),
                Err(error) => Err(FidError::Write(format!("{}: {error}", part.as_str()))),
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, FidError>>()?;
        Ok(())
    }
}

/// One FID being backfilled.
struct FidRun<'a> {
    fid: u64,
    /// Raised when the job's lease is lost.
    lost: &'a AtomicBool,
    verify: bool,
    store_messages: bool,
    /// What the hub answered so far.
    answer: HubAnswer,
    gathered: Gathered,
}

impl FidRun<'_> {
    fn check_lease(&self) -> Result<(), FidError> {
        if self.lost.load(Ordering::SeqCst) {
            Err(FidError::LeaseLost)
        } else {
            Ok(())
        }
    }
}

fn database(error: impl std::fmt::Display) -> FidError {
    FidError::Database(error.to_string())
}

/// Messages and rows of one FID not handed to the writers yet.
#[derive(Default)]
struct Gathered {
    /// Fetched, not verified yet.
    raw: Vec<waypoint_proto::Message>,
    batch: Batch,
    /// Messages in `batch`.
    messages: u64,
    /// Messages of the FID already handed over.
    written: u64,
}

impl Gathered {
    fn of(batch: Batch) -> Gathered {
        Gathered {
            batch,
            ..Gathered::default()
        }
    }

    fn add(&mut self, batch: Batch, messages: u64) {
        self.batch.extend(batch);
        self.messages += messages;
    }

    /// What to hand over now; keeps the count of what was.
    fn take(&mut self) -> Gathered {
        self.written += self.messages;
        Gathered {
            raw: Vec::new(),
            batch: std::mem::take(&mut self.batch),
            messages: std::mem::take(&mut self.messages),
            written: 0,
        }
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the job's lease every third of the visibility timeout until aborted; raises `lost`
/// when the lease is gone.
async fn renew_lease(
    queue: Queue,
    job: Job,
    owner: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        match queue.renew(&job, &owner, lease).await {
            Ok(true) => {}
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // The next renewal may work; the lease still has two thirds to go.
            Err(error) => tracing::warn!(job = job.id, %error, "could not renew a backfill lease"),
        }
    }
}

fn record(job: &Job, outcome: &Outcome, how: FinishState) {
    match how {
        FinishState::Completed => {
            metrics::counter!(BACKFILL_JOBS_COMPLETED_TOTAL).increment(1);
            tracing::debug!(
                job = job.id,
                fids = outcome.done.len(),
                messages = outcome.messages,
                "backfill job completed"
            );
        }
        FinishState::Retry => {
            metrics::counter!(BACKFILL_JOB_RETRIES_TOTAL).increment(1);
            tracing::warn!(job = job.id, attempt = job.attempts, retry_fids = ?outcome.retry, error = %outcome.retry_error, "backfill job will be retried");
        }
        FinishState::Failed => {
            metrics::counter!(BACKFILL_JOBS_FAILED_TOTAL).increment(1);
            let error = if outcome.retry_error.is_empty() {
                &outcome.dead_error
            } else {
                &outcome.retry_error
            };
            tracing::error!(job = job.id, attempt = job.attempts, retry_fids = ?outcome.retry, dead_fids = ?outcome.dead, %error, "backfill job failed; `waypoint backfill fid retry-failed` queues it again");
        }
        FinishState::Released => {
            tracing::info!(
                job = job.id,
                fids_left = outcome.retry.len(),
                "backfill job given back to the queue"
            );
        }
    }
    if how != FinishState::Failed && !outcome.dead.is_empty() {
        metrics::counter!(BACKFILL_JOBS_FAILED_TOTAL).increment(1);
    }
}

fn append_error(text: &mut String, fid: u64, error: &FidError) {
    if !text.is_empty() {
        text.push_str("; ");
    }
    text.push_str(&format!("fid {fid}: {error}"));
}

fn no_hub() -> HubError {
    HubError::InvalidOption {
        field: "url",
        message: "no hub client in this process".into(),
    }
}
