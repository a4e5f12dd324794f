//! The pipeline actors and the subtrees they form (docs/design.md):
//!
//! ```text
//! spam                         label lists: loaded at start, then refreshed
//! persist (one_for_one)        consumer:<type>:<n> ..., reclaimer
//! produce (rest_for_one)       publisher:<type> ..., ingest
//!   ingest (one_for_one)       repair, subscriber:<shard> ...
//! ```
//! Publishers start before everything that hands them events: under `rest_for_one`, a
//! publisher that crashes (losing events not yet in Redis) restarts the whole `ingest`
//! subtree, whose subscribers resume from their durable cursors. A subscriber crash restarts
//! only that subscriber.

pub mod consumer;
pub mod publisher;
pub mod reclaimer;
pub mod repair;
pub mod route;
pub mod spam;
pub mod subscriber;
pub mod tracker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use waypoint_actors::{ChildSpec, Mailbox, Strategy, SupervisorSpec};

use crate::runtime::Runtime;
use crate::streams::StreamType;
use crate::supervision;

/// Capacity of a consumer's mailbox: it mostly holds its own poll loop and reclaimed batches.
const CONSUMER_MAILBOX: usize = 4;
/// Capacity of the repair mailbox: gaps waiting to be re-fetched.
const REPAIR_MAILBOX: usize = 256;
/// First pause between shard discovery attempts while the hub is unreachable.
const DISCOVERY_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest pause between discovery attempts.
const DISCOVERY_RETRY_MAX: Duration = Duration::from_secs(30);

/// The consumer subtree: `stream.consumers_per_type` consumers per stream type and the
/// reclaimer.
pub fn persist_spec(runtime: &Runtime) -> SupervisorSpec {
    let consumers_per_type = runtime.config().stream.consumers_per_type.max(1);
    let mut children = Vec::new();
    let mut first_consumers = BTreeMap::new();
    for kind in StreamType::ALL {
        for index in 0..consumers_per_type {
            let mailbox = Mailbox::new(CONSUMER_MAILBOX);
            if index == 0 {
                first_consumers.insert(kind, mailbox.clone());
            }
            let runtime = runtime.clone();
            children.push(ChildSpec::worker(
                format!("consumer:{kind}:{index}"),
                mailbox,
                move || {
                    let consumer = consumer::Consumer {
                        kind,
                        index,
                        runtime: runtime.clone(),
                    };
                    (consumer, ())
                },
            ));
        }
    }
    let reclaimer_runtime = runtime.clone();
    children.push(ChildSpec::worker("reclaimer", Mailbox::new(4), move || {
        let reclaimer = reclaimer::Reclaimer {
            runtime: reclaimer_runtime.clone(),
            consumers: first_consumers.clone(),
        };
        (reclaimer, ())
    }));
    supervision::spec(runtime, Strategy::OneForOne, children)
}

/// The `spam` worker: its start loads the label lists, so it starts before the subtrees that
/// read messages (`produce`, `backfill`).
pub fn spam_child(runtime: &Runtime) -> ChildSpec {
    let runtime = runtime.clone();
    ChildSpec::worker(
        supervision::child_name(supervision::SPAM),
        Mailbox::new(4),
        move || {
            let refresher = spam::SpamRefresher {
                runtime: runtime.clone(),
            };
            (refresher, ())
        },
    )
}

/// The producer subtree for `shards`.
pub fn produce_spec(runtime: &Runtime, shards: &[u32]) -> SupervisorSpec {
    let capacity = runtime.config().stream.mailbox_capacity;
    let publishers: BTreeMap<StreamType, Mailbox<publisher::Msg>> = StreamType::ALL
        .into_iter()
        .map(|kind| (kind, Mailbox::new(capacity)))
        .collect();
    let mut children: Vec<ChildSpec> = publishers
        .iter()
        .map(|(kind, mailbox)| {
            let (kind, runtime) = (*kind, runtime.clone());
            ChildSpec::worker(format!("publisher:{kind}"), mailbox.clone(), move || {
                let publisher = publisher::Publisher {
                    kind,
                    runtime: runtime.clone(),
                };
                (publisher, ())
            })
        })
        .collect();
    let publishers: publisher::Publishers = Arc::new(publishers);

    let repair_mailbox = Mailbox::new(REPAIR_MAILBOX);
    let mut ingest = Vec::new();
    {
        let (runtime, publishers) = (runtime.clone(), Arc::clone(&publishers));
        ingest.push(ChildSpec::worker(
            "repair",
            repair_mailbox.clone(),
            move || {
                let repair = repair::Repair {
                    runtime: runtime.clone(),
                    publishers: Arc::clone(&publishers),
                };
                (repair, ())
            },
        ));
    }
    for &shard in shards {
        let (runtime, publishers, repair) = (
            runtime.clone(),
            Arc::clone(&publishers),
            repair_mailbox.clone(),
        );
        // A subscriber's mailbox only holds its own loop messages.
        ingest.push(ChildSpec::worker(
            format!("subscriber:{shard}"),
            Mailbox::new(4),
            move || {
                let subscriber = subscriber::Subscriber {
                    shard,
                    runtime: runtime.clone(),
                    publishers: Arc::clone(&publishers),
                    repair: repair.clone(),
                };
                (subscriber, ())
            },
        ));
    }
    children.push(ChildSpec::supervisor(
        "ingest",
        supervision::spec(runtime, Strategy::OneForOne, ingest),
    ));
    supervision::spec(runtime, Strategy::RestForOne, children)
}

/// Finds the shards to follow (`hub.shard_indices`, else every data shard from GetInfo,
/// retried while the hub is unreachable) and adds the producer subtree to the running tree.
pub async fn start_producer(runtime: Runtime) {
    let config = runtime.config();
    let Some(hub) = runtime.hub() else {
        return;
    };
    let mut delay = DISCOVERY_RETRY_INITIAL;
    let shards = loop {
        if runtime.is_shutting_down() {
            return;
        }
        match hub.info().await {
            Ok(info) => {
                runtime.record_hub(Ok(Some(info.version.clone())));
                let available: Vec<u32> = (1..=info.num_shards).collect();
                let wanted = &config.hub.shard_indices;
                if wanted.is_empty() {
                    break available;
                }
                let unknown: Vec<u32> = wanted
                    .iter()
                    .copied()
                    .filter(|shard| !available.contains(shard))
                    .collect();
                if !unknown.is_empty() {
                    tracing::error!(
                        ?unknown,
                        ?available,
                        "hub.shard_indices names shards the hub does not have"
                    );
                    runtime.record_hub(Err(format!(
                        "hub.shard_indices {unknown:?} not among the hub's data shards {available:?}"
                    )));
                }
                break wanted
                    .iter()
                    .copied()
                    .filter(|shard| available.contains(shard))
                    .collect();
            }
            Err(error) => {
                tracing::warn!(%error, delay_s = delay.as_secs(), "hub unreachable, retrying shard discovery");
                runtime.record_hub(Err(error.to_string()));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(DISCOVERY_RETRY_MAX);
            }
        }
    };
    if shards.is_empty() {
        tracing::error!("no data shard to follow; the producer does not start");
        return;
    }
    let Some(tree) = runtime.tree() else {
        return;
    };
    let spec = ChildSpec::supervisor(
        supervision::child_name(supervision::PRODUCE),
        produce_spec(&runtime, &shards),
    );
    match tree.start_child(supervision::ROOT, spec).await {
        Ok(()) => tracing::info!(?shards, "producer started"),
        Err(error) => tracing::error!(%error, "producer subtree did not start"),
    }
}

/// Re-reads the spam label sources (SIGHUP).
pub async fn reload_spam(runtime: &Runtime) {
    spam::refresh(runtime).await;
}
