//! Backfill: everything the hub holds for each FID, written with the same apply rules as the
//! live path, through a Redis job queue that never loses a job.
//!
//! ```text
//! backfill (one_for_one)
//! ├─ writer:<part>   one per part of the data (casts, reactions, links, ...): gathers the
//! │                  rows of every FID in flight into large transactions, in parallel
//! ├─ coordinator     queue upkeep (expired leases, retention markers, the first full queue),
//! │                  progress (status, metrics, log lines), exit when idle
//! └─ worker:<n>      one job at a time, one FID at a time: fetch → verify → writer → reconcile
//! ```
//!
//! Per FID a worker reads every `GetAll*MessagesByFid` list (adds and removes), the link
//! compact state, the username proofs and the on-chain events of every type, verifies the
//! messages as the live path does, and hands the rows to the writer page by page (a FID with
//! a very large history is never held whole: only its 20-byte hashes are kept, for the
//! reconciliation). Once the FID's answer is complete, rows the database holds as live that
//! the answer no longer contains are taken out (`store::reconcile`), except rows written
//! since the FID's fetch began. The writer applies batches gathered across FIDs with the
//! shared CRDT rules (`store::apply`), so live streaming and backfill converge on the same
//! database whatever order things arrive in.
//!
//! The writers start first and stop last: workers stop first, giving their unfinished FIDs
//! back to the queue, and the writers commit what they handed over.

mod coordinator;
mod fetch;
pub mod fids;
pub mod queue;
mod worker;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use waypoint_actors::{ChildSpec, Mailbox, Strategy, SupervisorSpec};

pub use queue::{Books, Job, JobKind, Queue, QueueError};

use crate::runtime::{BackfillPlan, Runtime};
use crate::store::rows::BatchPart;
use crate::supervision;

/// The writers' mailboxes by part.
pub(crate) type Writers = Arc<BTreeMap<BatchPart, Mailbox<writer::Msg>>>;

/// How often the coordinator looks at the books.
const COORDINATOR_TICK: Duration = Duration::from_secs(1);

/// What the parts of one backfill subtree share: how many workers are on a job right now.
#[derive(Default)]
pub(crate) struct Activity {
    busy: AtomicUsize,
}

impl Activity {
    /// A worker is on a job until the guard drops (also when the worker panics).
    fn on_job(self: &Arc<Self>) -> OnJob {
        self.busy.fetch_add(1, Ordering::SeqCst);
        OnJob(Arc::clone(self))
    }

    fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }
}

/// A worker's job in [`Activity`]'s count.
pub(crate) struct OnJob(Arc<Activity>);

impl Drop for OnJob {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The `backfill` subtree for `plan`.
pub fn backfill_spec(runtime: &Runtime, plan: &BackfillPlan) -> SupervisorSpec {
    let concurrency = plan.concurrency.max(1);
    let activity = Arc::new(Activity::default());
    // Each worker has at most one write outstanding per writer: a mailbox never holds more.
    let writers: Writers = Arc::new(
        BatchPart::ALL
            .into_iter()
            .map(|part| (part, Mailbox::new(concurrency)))
            .collect(),
    );
    let mut children = Vec::with_capacity(concurrency + writers.len() + 1);
    for (part, mailbox) in writers.iter() {
        let (runtime, part) = (runtime.clone(), *part);
        children.push(ChildSpec::worker(
            format!("writer:{}", part.as_str()),
            mailbox.clone(),
            move || {
                let writer = writer::Writer {
                    runtime: runtime.clone(),
                    part,
                };
                (writer, ())
            },
        ));
    }
    {
        let (runtime, plan, activity) = (runtime.clone(), plan.clone(), Arc::clone(&activity));
        children.push(ChildSpec::worker(
            "coordinator",
            Mailbox::new(4),
            move || {
                let coordinator = coordinator::Coordinator {
                    runtime: runtime.clone(),
                    plan: plan.clone(),
                    activity: Arc::clone(&activity),
                };
                (coordinator, ())
            },
        ));
    }
    for index in 0..concurrency {
        let (runtime, writers, activity) =
            (runtime.clone(), Arc::clone(&writers), Arc::clone(&activity));
        // A worker's mailbox only holds its own poll loop.
        children.push(ChildSpec::worker(
            format!("worker:{index}"),
            Mailbox::new(2),
            move || {
                let worker = worker::Worker {
                    index,
                    runtime: runtime.clone(),
                    writers: Arc::clone(&writers),
                    activity: Arc::clone(&activity),
                };
                (worker, ())
            },
        ));
    }
    supervision::spec(runtime, Strategy::OneForOne, children)
}

/// The child spec of the subtree, named as the tree knows it.
pub fn backfill_child(runtime: &Runtime, plan: &BackfillPlan) -> ChildSpec {
    ChildSpec::supervisor(
        supervision::child_name(supervision::BACKFILL),
        backfill_spec(runtime, plan),
    )
}

/// Errors of the backfill's own bookkeeping (queueing, markers); a FID's errors are the
/// worker's.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0} is not available in this process")]
    Missing(&'static str),
}

impl From<tokio_postgres::Error> for BackfillError {
    fn from(error: tokio_postgres::Error) -> Self {
        BackfillError::Store(error.into())
    }
}

impl BackfillError {
    /// Whether trying again later may work.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackfillError::Queue(error) => error.is_retryable(),
            BackfillError::Hub(error) => error.is_retryable(),
            BackfillError::Store(error) => error.is_retryable(),
            BackfillError::Missing(_) => false,
        }
    }
}

/// The attempts policy of `[backfill]`.
pub(crate) fn attempts(config: &crate::config::BackfillConfig) -> queue::Attempts {
    queue::Attempts {
        max_attempts: config.max_attempts,
        retry_delay: Duration::from_millis(config.retry_delay_ms),
    }
}
