//! The dev hub's state machine: merges history and live messages into the store and turns
//! every merge into the events a node would log, block by block, per shard.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::Rng;
use rand::seq::IndexedRandom;
use tokio::sync::broadcast;
use waypoint_proto::{
    HubEventType, LinkCompactStateBody, MergeFailureBody, MergeMessageBody, MergeOnChainEventBody,
    MergeUserNameProofBody, Message, MessageData, MessageType, PruneMessageBody, RevokeMessageBody,
    hub_event, link_body, message_data,
};

use super::dataset::{self, Dataset, DatasetOptions, Item, LiveGenerator};
use super::faults::{Corruption, Faults, LiveStep};
use super::log::{LogEntry, ShardLog};
use super::sign;
use super::store::{MergeError, Set, Store};
use crate::hub::ids;
use crate::replica::ReplicaState;

/// First block number of every shard's history: a chain that has been running for a while.
pub(crate) const FIRST_BLOCK: u64 = 1_000_000;

/// Largest number of history items in one block.
const MAX_HISTORY_BLOCK_ITEMS: u32 = 250;

/// Share of history blocks that are empty.
const EMPTY_BLOCK_RATE: f64 = 0.03;

/// Figures of a build, for logs and the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Messages generated (merged or not).
    pub num_messages: usize,
    /// Messages in the store after the history.
    pub num_stored_messages: usize,
    /// On-chain events.
    pub num_onchain_events: usize,
    /// Fname proofs generated.
    pub num_username_proofs: usize,
    /// Events logged over all shards (BLOCK_CONFIRMED included).
    pub num_events: usize,
    /// Blocks committed over all shards.
    pub num_blocks: u64,
}

/// The shard stores, the shard logs and the live generator.
pub(crate) struct HubState {
    /// One store per data shard, as on the node (index shard - 1).
    pub stores: Vec<Store>,
    /// Index shard - 1.
    pub logs: Vec<ShardLog>,
    pub live: LiveGenerator,
    pub options: DatasetOptions,
}

impl HubState {
    /// The shard of a fid (1 when it cannot be routed, which only fids beyond u32 hit).
    pub(crate) fn shard_of(&self, fid: u64) -> u32 {
        ids::shard_for_fid(fid, self.options.num_shards).unwrap_or(1)
    }

    fn index_of(&self, shard: u32) -> usize {
        (shard.max(1) as usize - 1).min(self.logs.len() - 1)
    }

    /// The log of a data shard.
    pub(crate) fn log(&self, shard: u32) -> Option<&ShardLog> {
        self.logs.get(usize::try_from(shard.checked_sub(1)?).ok()?)
    }

    /// The store of a data shard.
    pub(crate) fn store(&self, shard: u32) -> Option<&Store> {
        self.stores
            .get(usize::try_from(shard.checked_sub(1)?).ok()?)
    }

    /// The store of a fid's home shard.
    pub(crate) fn store_for(&self, fid: u64) -> &Store {
        &self.stores[self.index_of(self.shard_of(fid))]
    }

    /// The store and the log of a fid's home shard.
    fn parts_for(&mut self, fid: u64) -> (&mut Store, &mut ShardLog) {
        let index = self.index_of(self.shard_of(fid));
        (&mut self.stores[index], &mut self.logs[index])
    }

    /// Builds the history: generates the dataset, merges it and commits it as blocks.
    pub(crate) fn build(
        options: DatasetOptions,
        senders: &[broadcast::Sender<Arc<LogEntry>>],
        now: u64,
    ) -> (HubState, BuildStats) {
        let dataset = dataset::build(&options);
        let live = LiveGenerator::new(&options, &dataset);
        let logs = senders
            .iter()
            .enumerate()
            .map(|(index, sender)| ShardLog::new(index as u32 + 1, FIRST_BLOCK, sender.clone()))
            .collect();
        let mut state = HubState {
            stores: (0..options.num_shards).map(|_| Store::new()).collect(),
            logs,
            live,
            options,
        };
        let stats = state.merge_history(dataset, now);
        (state, stats)
    }

    /// Merges the history shard by shard, the shards in parallel (they share nothing: fname
    /// proofs are mirrored into every shard, as on the node).
    fn merge_history(&mut self, dataset: Dataset, now: u64) -> BuildStats {
        let mut stats = BuildStats {
            num_messages: dataset.num_messages,
            ..BuildStats::default()
        };
        let mut per_shard: Vec<Vec<Item>> = vec![Vec::new(); self.stores.len()];
        for item in dataset.items {
            match &item {
                Item::Message(message) => {
                    let fid = message.data.as_ref().map_or(0, |d| d.fid);
                    per_shard[self.index_of(self.shard_of(fid))].push(item);
                }
                Item::OnChain(event) => {
                    stats.num_onchain_events += 1;
                    per_shard[self.index_of(self.shard_of(event.fid))].push(item);
                }
                Item::Proof(_) => {
                    stats.num_username_proofs += 1;
                    for items in &mut per_shard {
                        items.push(item.clone());
                    }
                }
            }
        }
        let seed = self.options.seed;
        std::thread::scope(|scope| {
            for ((store, log), items) in self.stores.iter_mut().zip(&mut self.logs).zip(per_shard) {
                scope.spawn(move || merge_shard_history(seed, store, log, items, now));
            }
        });
        stats.num_stored_messages = self.stores.iter().map(Store::num_messages).sum();
        stats.num_events = self.logs.iter().map(ShardLog::len).sum();
        stats.num_blocks = self
            .logs
            .iter()
            .map(|log| log.next_block() - FIRST_BLOCK)
            .sum();
        stats
    }

    /// The replica a correct consumer must hold: every shard's rows, fname proofs once.
    pub(crate) fn dump(&self) -> ReplicaState {
        let mut state = ReplicaState::default();
        for (index, store) in self.stores.iter().enumerate() {
            store.dump_into(&mut state, index == 0);
        }
        state.sort();
        state
    }

    /// Commits one block on every shard (empty ones included) at `now`, applies retention,
    /// and moves the live clock on.
    pub(crate) fn commit_round(&mut self, now: u64, retention: Option<u64>) {
        for log in &mut self.logs {
            log.commit(now);
            if let Some(blocks) = retention {
                log.retain_blocks(blocks);
            }
        }
        self.live.tick();
    }

    /// Applies the retention window to every shard now.
    pub(crate) fn apply_retention(&mut self, retention: Option<u64>) {
        if let Some(blocks) = retention {
            for log in &mut self.logs {
                log.retain_blocks(blocks);
            }
        }
    }

    /// One live step: a new message, or the fault the faults pick instead.
    pub(crate) fn live_step(&mut self, faults: &Faults) {
        match faults.pick_step(&mut self.live.rng) {
            LiveStep::Message => self.live_message(faults),
            LiveStep::Prune => self.live_remove(true),
            LiveStep::Revoke => self.live_remove(false),
            LiveStep::MergeFailure => self.live_merge_failure(),
            LiveStep::CompactState => self.live_compact_state(),
        }
    }

    fn live_message(&mut self, faults: &Faults) {
        let fid = self.live.random_fid();
        let index = self.index_of(self.shard_of(fid));
        let Some(message) = self.live.next_message(fid, &self.stores[index]) else {
            return;
        };
        if let Some(corruption) = faults.pick_corruption(&mut self.live.rng) {
            let mut noise = [0u8; 24];
            self.live.rng.fill(&mut noise);
            let Some(key) = self.live.key(fid) else {
                return;
            };
            let broken = match corruption {
                Corruption::BadHash => sign::with_bad_hash(&message, key),
                Corruption::BadSignature => sign::with_bad_signature(&message),
                Corruption::Undecodable => sign::undecodable(&sign::garbage_bytes(&noise), key),
            };
            push_merge(&mut self.logs[index], &broken, Vec::new());
            return;
        }
        let message = Arc::new(message);
        let (store, log) = self.parts_for(fid);
        if let Ok(deleted) = store.merge(message.clone()) {
            push_merge(log, &message, deleted);
        }
    }

    /// A random stored message of a random fid: the oldest of one of its sets for a prune,
    /// any for a revoke. Tries a few fids, as some have nothing stored.
    fn pick_stored(&mut self, oldest: bool) -> Option<Arc<Message>> {
        const SETS: [Set; 5] = [
            Set::Casts,
            Set::Reactions,
            Set::Links,
            Set::Verifications,
            Set::UserData,
        ];
        for _ in 0..20 {
            let fid = self.live.random_fid();
            let set = *SETS.choose(&mut self.live.rng)?;
            let messages = self.store_for(fid).fid_messages(fid, set);
            let picked = if oldest {
                messages.first().cloned()
            } else {
                messages.choose(&mut self.live.rng).cloned()
            };
            if picked.is_some() {
                return picked;
            }
        }
        None
    }

    fn live_remove(&mut self, prune: bool) {
        let Some(message) = self.pick_stored(prune) else {
            return;
        };
        let (store, log) = self.parts_for(message.data.as_ref().map_or(0, |d| d.fid));
        let Some(removed) = store.delete(&message.hash) else {
            return;
        };
        let message = Some(removed.as_ref().clone());
        if prune {
            log.push(
                HubEventType::PruneMessage,
                hub_event::Body::PruneMessageBody(PruneMessageBody { message }),
            );
        } else {
            log.push(
                HubEventType::RevokeMessage,
                hub_event::Body::RevokeMessageBody(RevokeMessageBody { message }),
            );
        }
    }

    /// A message that made it into a block but did not merge: a re-submitted duplicate.
    fn live_merge_failure(&mut self) {
        let Some(message) = self.pick_stored(false) else {
            return;
        };
        let (_, log) = self.parts_for(message.data.as_ref().map_or(0, |d| d.fid));
        let error = MergeError::Duplicate;
        log.push(
            HubEventType::MergeFailure,
            hub_event::Body::MergeFailure(MergeFailureBody {
                message: Some(message.as_ref().clone()),
                code: error.code().to_string(),
                reason: error.to_string(),
            }),
        );
    }

    /// A LINK_COMPACT_STATE listing a subset of a fid's current follows.
    fn live_compact_state(&mut self) {
        for _ in 0..20 {
            let fid = self.live.random_fid();
            let follows: Vec<u64> = self
                .store_for(fid)
                .fid_messages(fid, Set::Links)
                .iter()
                .filter_map(|message| {
                    let data = message.data.as_ref()?;
                    let Some(message_data::Body::LinkBody(body)) = data.body.as_ref() else {
                        return None;
                    };
                    if data.r#type != MessageType::LinkAdd as i32 || body.r#type != "follow" {
                        return None;
                    }
                    let Some(link_body::Target::TargetFid(target)) = body.target else {
                        return None;
                    };
                    Some(target)
                })
                .collect();
            if follows.is_empty() {
                continue;
            }
            let mut kept: Vec<u64> = follows
                .into_iter()
                .filter(|_| self.live.rng.random_bool(0.7))
                .collect();
            kept.sort_unstable();
            let timestamp = self.live.timestamp_for(fid);
            let data = MessageData {
                r#type: MessageType::LinkCompactState as i32,
                fid,
                timestamp,
                network: self.options.network as i32,
                body: Some(message_data::Body::LinkCompactStateBody(
                    LinkCompactStateBody {
                        r#type: "follow".to_string(),
                        target_fids: kept,
                    },
                )),
            };
            let Some(message) = self.live.sign(data) else {
                return;
            };
            let message = Arc::new(message);
            let (store, log) = self.parts_for(fid);
            if let Ok(deleted) = store.merge(message.clone()) {
                push_merge(log, &message, deleted);
            }
            return;
        }
    }
}

/// Merges one shard's history into its store and commits it as blocks.
fn merge_shard_history(
    seed: u64,
    store: &mut Store,
    log: &mut ShardLog,
    items: Vec<Item>,
    now: u64,
) {
    // Block sizes are drawn up front so the number of history blocks is known, and their
    // times can end at `now`, one second apart, as a live chain's would.
    let mut cursor = BlockCursor::new(seed, log.shard(), items.len() as u64, now);
    cursor.skip_empty(log);
    for item in items {
        match item {
            Item::Message(message) => {
                if let Ok(deleted) = store.merge(message.clone()) {
                    push_merge(log, &message, deleted);
                }
            }
            Item::OnChain(event) => {
                store.merge_onchain_event(event.clone());
                log.push(
                    HubEventType::MergeOnChainEvent,
                    hub_event::Body::MergeOnChainEventBody(MergeOnChainEventBody {
                        on_chain_event: Some(event),
                    }),
                );
            }
            Item::Proof(proof) => {
                if let Ok(merged) = store.merge_username_proof(proof.clone()) {
                    log.push(
                        HubEventType::MergeUsernameProof,
                        hub_event::Body::MergeUsernameProofBody(MergeUserNameProofBody {
                            username_proof: Some(proof),
                            deleted_username_proof: merged.replaced,
                            username_proof_message: None,
                            deleted_username_proof_message: None,
                        }),
                    );
                    for released in merged.released {
                        log.push(
                            HubEventType::MergeUsernameProof,
                            hub_event::Body::MergeUsernameProofBody(MergeUserNameProofBody {
                                username_proof: None,
                                deleted_username_proof: Some(released),
                                username_proof_message: None,
                                deleted_username_proof_message: None,
                            }),
                        );
                    }
                }
            }
        }
        cursor.advance(log);
    }
    cursor.finish(log);
}

/// Logs a MERGE_MESSAGE with the messages the merge superseded.
fn push_merge(log: &mut ShardLog, message: &Message, deleted: Vec<Arc<Message>>) {
    let compact = message
        .data
        .as_ref()
        .is_some_and(|data| data.r#type == MessageType::LinkCompactState as i32);
    // The node strips deleted_messages from LINK_COMPACT_STATE merges.
    let deleted_messages = if compact {
        Vec::new()
    } else {
        deleted.iter().map(|m| m.as_ref().clone()).collect()
    };
    log.push(
        HubEventType::MergeMessage,
        hub_event::Body::MergeMessageBody(MergeMessageBody {
            message: Some(message.clone()),
            deleted_messages,
        }),
    );
}

/// Cuts a shard's history into blocks of drawn sizes.
struct BlockCursor {
    sizes: VecDeque<u32>,
    remaining: u32,
    next_timestamp: u64,
}

impl BlockCursor {
    fn new(seed: u64, shard: u32, num_items: u64, now: u64) -> BlockCursor {
        let mut rng = dataset::rng_for(seed, "blocks", u64::from(shard));
        let mut sizes = VecDeque::new();
        let mut covered = 0u64;
        while covered < num_items {
            let size = if rng.random_bool(EMPTY_BLOCK_RATE) {
                0
            } else {
                rng.random_range(1..=MAX_HISTORY_BLOCK_ITEMS)
            };
            covered += u64::from(size);
            sizes.push_back(size);
        }
        let num_blocks = sizes.len().max(1) as u64;
        let remaining = sizes.pop_front().unwrap_or(0);
        BlockCursor {
            sizes,
            remaining,
            next_timestamp: now.saturating_sub(num_blocks),
        }
    }

    fn commit(&mut self, log: &mut ShardLog) {
        log.commit(self.next_timestamp);
        self.next_timestamp += 1;
    }

    /// Commits the empty blocks due now.
    fn skip_empty(&mut self, log: &mut ShardLog) {
        while self.remaining == 0 {
            let Some(next) = self.sizes.pop_front() else {
                return;
            };
            self.commit(log);
            self.remaining = next;
        }
    }

    /// Counts one item into the current block, committing it when full.
    fn advance(&mut self, log: &mut ShardLog) {
        self.remaining = self.remaining.saturating_sub(1);
        if self.remaining == 0 {
            self.commit(log);
            self.remaining = self.sizes.pop_front().unwrap_or(MAX_HISTORY_BLOCK_ITEMS);
            self.skip_empty(log);
        }
    }

    /// Commits what is left (the chain always has at least one block).
    fn finish(&mut self, log: &mut ShardLog) {
        if log.num_pending() > 0 || log.next_block() == FIRST_BLOCK {
            self.commit(log);
        }
    }
}
