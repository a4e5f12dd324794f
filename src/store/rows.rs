//! Hub events and messages turned into rows, grouped by table so a batch is written with one
//! statement per table. Pure code: no database here.
//!
//! The data of a message is what its hash covers: `data_bytes` decoded when present, else
//! `data`. Text columns go through `replica::sanitize_text` (PostgreSQL text cannot hold NUL).

use serde_json::{Value, json};
use waypoint_proto::{
    HubEvent, Message, MessageData, MessageType, OnChainEvent, UserNameProof, cast_add_body, embed,
    hub_event, link_body, message_data, on_chain_event, reaction_body,
};

use crate::hub::{ids, verify};
use crate::replica::sanitize_text;

/// Which CRDT set a remove message belongs to (`crdt_removes.set_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i16)]
pub enum SetKind {
    Cast = 1,
    Reaction = 2,
    Link = 3,
    Verification = 4,
}

/// Why an input produced no row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// MERGE_FAILURE events are never applied.
    MergeFailure,
    /// BLOCK_CONFIRMED and other events without data to store.
    NoData,
    /// A message type Waypoint does not model (kept only in `messages`).
    Unmodelled(i32),
    /// The message's data does not decode, or lacks its body.
    Malformed(String),
}

#[derive(Debug, Clone)]
pub struct CastRow {
    pub hash: Vec<u8>,
    pub fid: i64,
    pub timestamp: i64,
    pub text: String,
    pub cast_type: i16,
    pub parent_fid: Option<i64>,
    pub parent_hash: Option<Vec<u8>>,
    pub parent_url: Option<String>,
    pub embeds: Value,
    pub mentions: Value,
    pub mentions_positions: Value,
    pub signer: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct ReactionRow {
    pub hash: Vec<u8>,
    pub fid: i64,
    pub reaction_type: i16,
    pub target_cast_fid: Option<i64>,
    pub target_cast_hash: Option<Vec<u8>>,
    pub target_url: Option<String>,
    pub crdt_key: Vec<u8>,
    pub timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct LinkRow {
    pub hash: Vec<u8>,
    pub fid: i64,
    pub target_fid: i64,
    pub link_type: String,
    pub display_timestamp: Option<i64>,
    pub crdt_key: Vec<u8>,
    pub timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct VerificationRow {
    pub hash: Vec<u8>,
    pub fid: i64,
    pub address: Vec<u8>,
    pub block_hash: Vec<u8>,
    pub claim_signature: Vec<u8>,
    pub verification_type: i16,
    pub chain_id: i32,
    pub protocol: i16,
    pub timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct RemoveRow {
    pub hash: Vec<u8>,
    pub set_kind: SetKind,
    pub fid: i64,
    pub crdt_key: Vec<u8>,
    pub timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct UserDataRow {
    pub fid: i64,
    pub data_type: i16,
    pub value: String,
    pub hash: Vec<u8>,
    pub timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct ProofRow {
    pub username: String,
    pub fid: i64,
    pub proof_type: i16,
    pub owner: Vec<u8>,
    pub signature: Vec<u8>,
    /// Unix seconds, as issued.
    pub timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct ProofRemovalRow {
    pub username: String,
    pub fid: i64,
    pub timestamp: i64,
    /// When it was deleted (Unix seconds), for deleted_at.
    pub at: i64,
}

#[derive(Debug, Clone)]
pub struct OnchainRow {
    pub chain_id: i32,
    pub tx_hash: Vec<u8>,
    pub log_index: i32,
    pub fid: i64,
    pub event_type: i16,
    pub block_number: i64,
    pub block_hash: Vec<u8>,
    pub block_timestamp: i64,
    pub tx_index: i32,
    pub version: i32,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct CompactStateRow {
    pub fid: i64,
    pub link_type: String,
    pub hash: Vec<u8>,
    pub timestamp: i64,
    pub target_fids: Vec<i64>,
}

/// A message taken out of the live set by PRUNE_MESSAGE or REVOKE_MESSAGE, or because a
/// backfill found the hub no longer holds it.
#[derive(Debug, Clone)]
pub struct TombstoneRow {
    pub hash: Vec<u8>,
    /// [`TOMBSTONE_PRUNED`], [`TOMBSTONE_REVOKED`] or [`TOMBSTONE_GONE`].
    pub reason: i16,
    /// Unix seconds.
    pub at: i64,
}

/// `message_tombstones.reason`: PRUNE_MESSAGE.
pub const TOMBSTONE_PRUNED: i16 = 1;
/// `message_tombstones.reason`: REVOKE_MESSAGE.
pub const TOMBSTONE_REVOKED: i16 = 2;
/// `message_tombstones.reason`: a backfill found the hub no longer holds the message (it was
/// pruned, revoked or removed while nobody listened).
pub const TOMBSTONE_GONE: i16 = 3;

/// A key of a keyed set whose liveness must be decided again (its rows changed outside the
/// batch's own messages, e.g. a tombstone from a backfill).
#[derive(Debug, Clone)]
pub struct RecheckRow {
    pub set_kind: SetKind,
    pub fid: i64,
    /// `crdt_key` (reactions, links) or the address (verifications).
    pub key: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct MessageRow {
    pub hash: Vec<u8>,
    pub fid: i64,
    pub message_type: i16,
    pub timestamp: i64,
    pub signer: Vec<u8>,
    pub body: Value,
    pub raw: Vec<u8>,
}

/// Rows of one batch, by table.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub casts: Vec<CastRow>,
    pub reactions: Vec<ReactionRow>,
    pub links: Vec<LinkRow>,
    pub verifications: Vec<VerificationRow>,
    pub removes: Vec<RemoveRow>,
    pub user_data: Vec<UserDataRow>,
    pub proofs: Vec<ProofRow>,
    pub proof_removals: Vec<ProofRemovalRow>,
    pub onchain: Vec<OnchainRow>,
    pub compact_states: Vec<CompactStateRow>,
    pub tombstones: Vec<TombstoneRow>,
    pub rechecks: Vec<RecheckRow>,
    pub messages: Vec<MessageRow>,
    /// Inputs (by index) that produced nothing, and why.
    pub skipped: Vec<(usize, SkipReason)>,
}

/// Row counts per table of a batch ([`Batch::shape`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape([usize; 13]);

/// The parts of a batch that apply independently: each touches its own tables under its own
/// advisory lock (`store::apply`), so the parts of many batches can be written in parallel,
/// one transaction per part, as the live path's consumers do per stream type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BatchPart {
    Casts,
    Reactions,
    Links,
    Verifications,
    UserData,
    UsernameProofs,
    Onchain,
    Messages,
    /// Tombstones and rechecks touch every set.
    Gone,
}

impl BatchPart {
    pub const ALL: [BatchPart; 9] = [
        BatchPart::Casts,
        BatchPart::Reactions,
        BatchPart::Links,
        BatchPart::Verifications,
        BatchPart::UserData,
        BatchPart::UsernameProofs,
        BatchPart::Onchain,
        BatchPart::Messages,
        BatchPart::Gone,
    ];

    /// A bounded label (metrics, actor names).
    pub fn as_str(self) -> &'static str {
        match self {
            BatchPart::Casts => "casts",
            BatchPart::Reactions => "reactions",
            BatchPart::Links => "links",
            BatchPart::Verifications => "verifications",
            BatchPart::UserData => "user_data",
            BatchPart::UsernameProofs => "username_proofs",
            BatchPart::Onchain => "onchain_events",
            BatchPart::Messages => "messages",
            BatchPart::Gone => "gone",
        }
    }
}

impl Batch {
    /// Splits the batch into its independent parts (empty parts left out), each with the
    /// number of rows it holds.
    pub fn split(self) -> Vec<(BatchPart, Batch, usize)> {
        let mut parts = Vec::new();
        let mut push = |part: BatchPart, batch: Batch| {
            let rows = batch.num_rows();
            if rows > 0 {
                parts.push((part, batch, rows));
            }
        };
        let mut removes: std::collections::BTreeMap<SetKind, Vec<RemoveRow>> =
            std::collections::BTreeMap::new();
        for remove in self.removes {
            removes.entry(remove.set_kind).or_default().push(remove);
        }
        let mut removes_of = |kind| removes.remove(&kind).unwrap_or_default();
        push(
            BatchPart::Casts,
            Batch {
                casts: self.casts,
                removes: removes_of(SetKind::Cast),
                ..Batch::default()
            },
        );
        push(
            BatchPart::Reactions,
            Batch {
                reactions: self.reactions,
                removes: removes_of(SetKind::Reaction),
                ..Batch::default()
            },
        );
        push(
            BatchPart::Links,
            Batch {
                links: self.links,
                compact_states: self.compact_states,
                removes: removes_of(SetKind::Link),
                ..Batch::default()
            },
        );
        push(
            BatchPart::Verifications,
            Batch {
                verifications: self.verifications,
                removes: removes_of(SetKind::Verification),
                ..Batch::default()
            },
        );
        push(
            BatchPart::UserData,
            Batch {
                user_data: self.user_data,
                ..Batch::default()
            },
        );
        push(
            BatchPart::UsernameProofs,
            Batch {
                proofs: self.proofs,
                proof_removals: self.proof_removals,
                ..Batch::default()
            },
        );
        push(
            BatchPart::Onchain,
            Batch {
                onchain: self.onchain,
                ..Batch::default()
            },
        );
        push(
            BatchPart::Messages,
            Batch {
                messages: self.messages,
                ..Batch::default()
            },
        );
        push(
            BatchPart::Gone,
            Batch {
                tombstones: self.tombstones,
                rechecks: self.rechecks,
                ..Batch::default()
            },
        );
        parts
    }

    /// Row counts per table: after `extend`ing several batches into one, `take_front` with
    /// each one's shape, in order, gives them back.
    pub fn shape(&self) -> BatchShape {
        BatchShape([
            self.casts.len(),
            self.reactions.len(),
            self.links.len(),
            self.verifications.len(),
            self.removes.len(),
            self.user_data.len(),
            self.proofs.len(),
            self.proof_removals.len(),
            self.onchain.len(),
            self.compact_states.len(),
            self.tombstones.len(),
            self.rechecks.len(),
            self.messages.len(),
        ])
    }

    /// Takes the first rows of every table, as many as `shape` counts (see [`Batch::shape`]).
    pub fn take_front(&mut self, shape: &BatchShape) -> Batch {
        fn front<T>(rows: &mut Vec<T>, count: usize) -> Vec<T> {
            rows.drain(..count.min(rows.len())).collect()
        }
        let [
            casts,
            reactions,
            links,
            verifications,
            removes,
            user_data,
            proofs,
            proof_removals,
            onchain,
            compact_states,
            tombstones,
            rechecks,
            messages,
        ] = shape.0;
        Batch {
            casts: front(&mut self.casts, casts),
            reactions: front(&mut self.reactions, reactions),
            links: front(&mut self.links, links),
            verifications: front(&mut self.verifications, verifications),
            removes: front(&mut self.removes, removes),
            user_data: front(&mut self.user_data, user_data),
            proofs: front(&mut self.proofs, proofs),
            proof_removals: front(&mut self.proof_removals, proof_removals),
            onchain: front(&mut self.onchain, onchain),
            compact_states: front(&mut self.compact_states, compact_states),
            tombstones: front(&mut self.tombstones, tombstones),
            rechecks: front(&mut self.rechecks, rechecks),
            messages: front(&mut self.messages, messages),
            skipped: Vec::new(),
        }
    }

    /// Rows the batch writes (inputs that produced nothing not counted).
    pub fn num_rows(&self) -> usize {
        self.casts.len()
            + self.reactions.len()
            + self.links.len()
            + self.verifications.len()
            + self.removes.len()
            + self.user_data.len()
            + self.proofs.len()
            + self.proof_removals.len()
            + self.onchain.len()
            + self.compact_states.len()
            + self.tombstones.len()
            + self.rechecks.len()
            + self.messages.len()
    }
}

/// How a message reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Merged into the hub's store.
    Merged,
    /// Removed by the hub: PRUNE_MESSAGE (1) or REVOKE_MESSAGE (2), at a Unix time.
    Removed { reason: i16, at: i64 },
}

impl Batch {
    /// Adds the rows of one hub event (`index` identifies it in [`Batch::skipped`]).
    pub fn add_event(&mut self, index: usize, event: &HubEvent, store_messages: bool) {
        let event_time = ids::farcaster_to_unix(event.timestamp) as i64;
        match &event.body {
            Some(hub_event::Body::MergeMessageBody(body)) => match &body.message {
                Some(message) => {
                    self.add_message_as(index, message, Origin::Merged, store_messages)
                }
                None => self.skip(
                    index,
                    SkipReason::Malformed("merge without a message".into()),
                ),
            },
            Some(hub_event::Body::PruneMessageBody(body)) => match &body.message {
                Some(message) => {
                    let origin = Origin::Removed {
                        reason: TOMBSTONE_PRUNED,
                        at: event_time,
                    };
                    self.add_message_as(index, message, origin, store_messages)
                }
                None => self.skip(
                    index,
                    SkipReason::Malformed("prune without a message".into()),
                ),
            },
            Some(hub_event::Body::RevokeMessageBody(body)) => match &body.message {
                Some(message) => {
                    let origin = Origin::Removed {
                        reason: TOMBSTONE_REVOKED,
                        at: event_time,
                    };
                    self.add_message_as(index, message, origin, store_messages)
                }
                None => self.skip(
                    index,
                    SkipReason::Malformed("revoke without a message".into()),
                ),
            },
            Some(hub_event::Body::MergeUsernameProofBody(body)) => {
                let mut any = false;
                let proof = body.username_proof.clone().or_else(|| {
                    body.username_proof_message
                        .as_ref()
                        .and_then(proof_of_message)
                });
                if let Some(proof) = proof {
                    self.proofs.push(proof_row(&proof));
                    any = true;
                }
                let deleted = body.deleted_username_proof.clone().or_else(|| {
                    body.deleted_username_proof_message
                        .as_ref()
                        .and_then(proof_of_message)
                });
                if let Some(deleted) = deleted {
                    let row = proof_row(&deleted);
                    self.proof_removals.push(ProofRemovalRow {
                        username: row.username,
                        fid: row.fid,
                        timestamp: row.timestamp,
                        at: event_time,
                    });
                    any = true;
                }
                if !any {
                    self.skip(index, SkipReason::NoData);
                }
            }
            Some(hub_event::Body::MergeOnChainEventBody(body)) => match &body.on_chain_event {
                Some(onchain) => self.onchain.push(onchain_row(onchain)),
                None => self.skip(
                    index,
                    SkipReason::Malformed("on-chain merge without an event".into()),
                ),
            },
            Some(hub_event::Body::MergeFailure(_)) => self.skip(index, SkipReason::MergeFailure),
            _ => self.skip(index, SkipReason::NoData),
        }
    }

    /// Adds the rows of a message as the hub's store holds it (backfill: `GetAll*` pages).
    pub fn add_message(&mut self, index: usize, message: &Message, store_messages: bool) {
        self.add_message_as(index, message, Origin::Merged, store_messages);
    }

    /// Adds an on-chain event as the hub holds it (backfill: `GetOnChainEvents`).
    pub fn add_onchain_event(&mut self, event: &OnChainEvent) {
        self.onchain.push(onchain_row(event));
    }

    /// Adds a username proof as the hub holds it (backfill: `GetUserNameProofsByFid`).
    pub fn add_username_proof(&mut self, proof: &UserNameProof) {
        self.proofs.push(proof_row(proof));
    }

    /// Takes a message out of the live set because the hub no longer holds it; `recheck`
    /// names its key when it belongs to a keyed set, so the key's winner is decided again.
    pub fn add_gone(&mut self, hash: Vec<u8>, at: i64, recheck: Option<RecheckRow>) {
        self.tombstones.push(TombstoneRow {
            hash,
            reason: TOMBSTONE_GONE,
            at,
        });
        self.rechecks.extend(recheck);
    }

    /// Takes a username proof out of the live set because the hub no longer lists it for its
    /// fid.
    pub fn add_proof_gone(&mut self, username: String, fid: i64, timestamp: i64, at: i64) {
        self.proof_removals.push(ProofRemovalRow {
            username,
            fid,
            timestamp,
            at,
        });
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.num_rows() == 0
    }

    /// Adds another batch's rows to this one (skips keep their own indexes).
    pub fn extend(&mut self, other: Batch) {
        self.casts.extend(other.casts);
        self.reactions.extend(other.reactions);
        self.links.extend(other.links);
        self.verifications.extend(other.verifications);
        self.removes.extend(other.removes);
        self.user_data.extend(other.user_data);
        self.proofs.extend(other.proofs);
        self.proof_removals.extend(other.proof_removals);
        self.onchain.extend(other.onchain);
        self.compact_states.extend(other.compact_states);
        self.tombstones.extend(other.tombstones);
        self.rechecks.extend(other.rechecks);
        self.messages.extend(other.messages);
        self.skipped.extend(other.skipped);
    }

    fn skip(&mut self, index: usize, reason: SkipReason) {
        self.skipped.push((index, reason));
    }

    fn add_message_as(
        &mut self,
        index: usize,
        message: &Message,
        origin: Origin,
        store_messages: bool,
    ) {
        let data = match verify::message_data(message) {
            Ok(data) => data,
            Err(error) => return self.skip(index, SkipReason::Malformed(error.to_string())),
        };
        let hash = message.hash.clone();
        if let Origin::Removed { reason, at } = origin {
            self.tombstones.push(TombstoneRow {
                hash: hash.clone(),
                reason,
                at,
            });
        }
        if store_messages && origin == Origin::Merged {
            self.messages.push(MessageRow {
                hash: hash.clone(),
                fid: data.fid as i64,
                message_type: data.r#type as i16,
                timestamp: message_time(&data),
                signer: message.signer.clone(),
                body: body_json(&data),
                raw: verify::signed_bytes(message)
                    .map(|bytes| bytes.into_owned())
                    .unwrap_or_default(),
            });
        }
        // A prune or revoke also carries the message itself: record its row so the tombstone
        // applies whichever arrives first (the add or its removal).
        let timestamp = message_time(&data);
        let fid = data.fid as i64;
        let Some(body) = data.body.as_ref() else {
            return self.skip(
                index,
                SkipReason::Malformed("message without a body".into()),
            );
        };
        match (MessageType::try_from(data.r#type), body) {
            (Ok(MessageType::CastAdd), message_data::Body::CastAddBody(cast)) => {
                self.casts
                    .push(cast_row(hash, fid, timestamp, cast, &message.signer));
            }
            (Ok(MessageType::CastRemove), message_data::Body::CastRemoveBody(remove)) => {
                self.removes.push(RemoveRow {
                    hash,
                    set_kind: SetKind::Cast,
                    fid,
                    crdt_key: remove.target_hash.clone(),
                    timestamp,
                });
            }
            (
                Ok(kind @ (MessageType::ReactionAdd | MessageType::ReactionRemove)),
                message_data::Body::ReactionBody(reaction),
            ) => {
                let (target_cast_fid, target_cast_hash, target_url) = match &reaction.target {
                    Some(reaction_body::Target::TargetCastId(cast)) => {
                        (Some(cast.fid as i64), Some(cast.hash.clone()), None)
                    }
                    Some(reaction_body::Target::TargetUrl(url)) => {
                        (None, None, Some(sanitize_text(url).into_owned()))
                    }
                    None => (None, None, None),
                };
                let crdt_key = reaction_key(
                    reaction.r#type,
                    target_cast_hash.as_deref(),
                    target_url.as_deref(),
                );
                if kind == MessageType::ReactionAdd {
                    self.reactions.push(ReactionRow {
                        hash,
                        fid,
                        reaction_type: reaction.r#type as i16,
                        target_cast_fid,
                        target_cast_hash,
                        target_url,
                        crdt_key,
                        timestamp,
                    });
                } else {
                    self.removes.push(RemoveRow {
                        hash,
                        set_kind: SetKind::Reaction,
                        fid,
                        crdt_key,
                        timestamp,
                    });
                }
            }
            (
                Ok(kind @ (MessageType::LinkAdd | MessageType::LinkRemove)),
                message_data::Body::LinkBody(link),
            ) => {
                let target_fid = match link.target {
                    Some(link_body::Target::TargetFid(target)) => target as i64,
                    None => {
                        return self
                            .skip(index, SkipReason::Malformed("link without a target".into()));
                    }
                };
                let link_type = sanitize_text(&link.r#type).into_owned();
                let crdt_key = link_key(&link_type, target_fid);
                if kind == MessageType::LinkAdd {
                    self.links.push(LinkRow {
                        hash,
                        fid,
                        target_fid,
                        display_timestamp: link
                            .display_timestamp
                            .map(|seconds| ids::farcaster_to_unix(u64::from(seconds)) as i64),
                        link_type,
                        crdt_key,
                        timestamp,
                    });
                } else {
                    self.removes.push(RemoveRow {
                        hash,
                        set_kind: SetKind::Link,
                        fid,
                        crdt_key,
                        timestamp,
                    });
                }
            }
            (
                Ok(MessageType::LinkCompactState),
                message_data::Body::LinkCompactStateBody(state),
            ) => {
                self.compact_states.push(CompactStateRow {
                    fid,
                    link_type: sanitize_text(&state.r#type).into_owned(),
                    hash,
                    timestamp,
                    target_fids: state.target_fids.iter().map(|fid| *fid as i64).collect(),
                });
            }
            (
                Ok(MessageType::VerificationAddEthAddress),
                message_data::Body::VerificationAddAddressBody(verification),
            ) => {
                self.verifications.push(VerificationRow {
                    hash,
                    fid,
                    address: verification.address.clone(),
                    block_hash: verification.block_hash.clone(),
                    claim_signature: verification.claim_signature.clone(),
                    verification_type: verification.verification_type as i16,
                    chain_id: verification.chain_id as i32,
                    protocol: verification.protocol as i16,
                    timestamp,
                });
            }
            (
                Ok(MessageType::VerificationRemove),
                message_data::Body::VerificationRemoveBody(remove),
            ) => {
                self.removes.push(RemoveRow {
                    hash,
                    set_kind: SetKind::Verification,
                    fid,
                    crdt_key: remove.address.clone(),
                    timestamp,
                });
            }
            (Ok(MessageType::UserDataAdd), message_data::Body::UserDataBody(user_data)) => {
                self.user_data.push(UserDataRow {
                    fid,
                    data_type: user_data.r#type as i16,
                    value: sanitize_text(&user_data.value).into_owned(),
                    hash,
                    timestamp,
                });
            }
            (Ok(MessageType::UsernameProof), message_data::Body::UsernameProofBody(proof)) => {
                if origin == Origin::Merged {
                    self.proofs.push(proof_row(proof));
                }
            }
            _ => self.skip(index, SkipReason::Unmodelled(data.r#type)),
        }
    }
}

/// Conflict key of a reaction within its fid: type, then the target (cast hash or URL).
pub fn reaction_key(reaction_type: i32, cast_hash: Option<&[u8]>, url: Option<&str>) -> Vec<u8> {
    let mut key =
        Vec::with_capacity(2 + cast_hash.map_or(0, <[u8]>::len) + url.map_or(0, str::len));
    key.push(reaction_type as u8);
    match (cast_hash, url) {
        (Some(hash), _) => {
            key.push(b'c');
            key.extend_from_slice(hash);
        }
        (None, Some(url)) => {
            key.push(b'u');
            key.extend_from_slice(url.as_bytes());
        }
        (None, None) => key.push(b'-'),
    }
    key
}

/// Conflict key of a link within its fid: type, then the target fid.
pub fn link_key(link_type: &str, target_fid: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(link_type.len() + 9);
    key.extend_from_slice(link_type.as_bytes());
    key.push(0);
    key.extend_from_slice(&target_fid.to_be_bytes());
    key
}

/// A message's time in Unix seconds.
fn message_time(data: &MessageData) -> i64 {
    ids::farcaster_to_unix(u64::from(data.timestamp)) as i64
}

fn cast_row(
    hash: Vec<u8>,
    fid: i64,
    timestamp: i64,
    cast: &waypoint_proto::CastAddBody,
    signer: &[u8],
) -> CastRow {
    let (parent_fid, parent_hash, parent_url) = match &cast.parent {
        Some(cast_add_body::Parent::ParentCastId(parent)) => {
            (Some(parent.fid as i64), Some(parent.hash.clone()), None)
        }
        Some(cast_add_body::Parent::ParentUrl(url)) => {
            (None, None, Some(sanitize_text(url).into_owned()))
        }
        None => (None, None, None),
    };
    CastRow {
        hash,
        fid,
        timestamp,
        text: sanitize_text(&cast.text).into_owned(),
        cast_type: cast.r#type as i16,
        parent_fid,
        parent_hash,
        parent_url,
        embeds: embeds_json(cast),
        mentions: json!(cast.mentions),
        mentions_positions: json!(cast.mentions_positions),
        signer: signer.to_vec(),
    }
}

/// `[{"url": ...} | {"cast_id": {"fid": n, "hash": "hex"}}]`; deprecated string embeds as URLs.
pub fn embeds_json(cast: &waypoint_proto::CastAddBody) -> Value {
    let mut embeds: Vec<Value> = cast
        .embeds
        .iter()
        .filter_map(|embed| match &embed.embed {
            Some(embed::Embed::Url(url)) => Some(json!({"url": sanitize_text(url)})),
            Some(embed::Embed::CastId(cast)) => {
                Some(json!({"cast_id": {"fid": cast.fid, "hash": hex::encode(&cast.hash)}}))
            }
            None => None,
        })
        .collect();
    if embeds.is_empty() {
        embeds = cast
            .embeds_deprecated
            .iter()
            .map(|url| json!({"url": sanitize_text(url)}))
            .collect();
    }
    Value::Array(embeds)
}

fn proof_of_message(message: &Message) -> Option<UserNameProof> {
    match verify::message_data(message).ok()?.body? {
        message_data::Body::UsernameProofBody(proof) => Some(proof),
        _ => None,
    }
}

fn proof_row(proof: &UserNameProof) -> ProofRow {
    ProofRow {
        username: sanitize_text(&String::from_utf8_lossy(&proof.name)).into_owned(),
        fid: proof.fid as i64,
        proof_type: proof.r#type as i16,
        owner: proof.owner.clone(),
        signature: proof.signature.clone(),
        timestamp: proof.timestamp as i64,
    }
}

fn onchain_row(event: &OnChainEvent) -> OnchainRow {
    let body = match &event.body {
        Some(on_chain_event::Body::SignerEventBody(signer)) => json!({
            "key": hex::encode(&signer.key),
            "key_type": signer.key_type,
            "event_type": signer.event_type,
            "metadata": hex::encode(&signer.metadata),
            "metadata_type": signer.metadata_type,
        }),
        Some(on_chain_event::Body::SignerMigratedEventBody(migrated)) => {
            json!({"migrated_at": migrated.migrated_at})
        }
        Some(on_chain_event::Body::IdRegisterEventBody(register)) => json!({
            "to": format!("0x{}", hex::encode(&register.to)),
            "event_type": register.event_type,
            "from": format!("0x{}", hex::encode(&register.from)),
            "recovery_address": format!("0x{}", hex::encode(&register.recovery_address)),
        }),
        Some(on_chain_event::Body::StorageRentEventBody(rent)) => json!({
            "payer": format!("0x{}", hex::encode(&rent.payer)),
            "units": rent.units,
            "expiry": rent.expiry,
        }),
        Some(on_chain_event::Body::TierPurchaseEventBody(tier)) => json!({
            "tier_type": tier.tier_type,
            "for_days": tier.for_days,
            "payer": format!("0x{}", hex::encode(&tier.payer)),
        }),
        Some(on_chain_event::Body::ChannelRegisterEventBody(channel)) => json!({
            "channel_key": sanitize_text(&channel.channel_key),
            "expiry": channel.expiry,
            "owner_address": format!("0x{}", hex::encode(&channel.owner_address)),
            "event_type": channel.event_type,
        }),
        None => json!({}),
    };
    OnchainRow {
        chain_id: event.chain_id as i32,
        tx_hash: event.transaction_hash.clone(),
        log_index: event.log_index as i32,
        fid: event.fid as i64,
        event_type: event.r#type as i16,
        block_number: i64::from(event.block_number),
        block_hash: event.block_hash.clone(),
        block_timestamp: event.block_timestamp as i64,
        tx_index: event.tx_index as i32,
        version: event.version as i32,
        body,
    }
}

/// A JSON view of a message body for the `messages` table.
fn body_json(data: &MessageData) -> Value {
    match &data.body {
        Some(message_data::Body::CastAddBody(cast)) => json!({
            "text": sanitize_text(&cast.text),
            "mentions": cast.mentions,
            "mentions_positions": cast.mentions_positions,
            "embeds": embeds_json(cast),
            "parent": match &cast.parent {
                Some(cast_add_body::Parent::ParentCastId(parent)) => json!({"fid": parent.fid, "hash": hex::encode(&parent.hash)}),
                Some(cast_add_body::Parent::ParentUrl(url)) => json!({"url": sanitize_text(url)}),
                None => Value::Null,
            },
            "type": cast.r#type,
        }),
        Some(message_data::Body::CastRemoveBody(remove)) => {
            json!({"target_hash": hex::encode(&remove.target_hash)})
        }
        Some(message_data::Body::ReactionBody(reaction)) => json!({
            "type": reaction.r#type,
            "target": match &reaction.target {
                Some(reaction_body::Target::TargetCastId(cast)) => json!({"fid": cast.fid, "hash": hex::encode(&cast.hash)}),
                Some(reaction_body::Target::TargetUrl(url)) => json!({"url": sanitize_text(url)}),
                None => Value::Null,
            },
        }),
        Some(message_data::Body::LinkBody(link)) => json!({
            "type": sanitize_text(&link.r#type),
            "target_fid": match link.target { Some(link_body::Target::TargetFid(fid)) => json!(fid), None => Value::Null },
            "display_timestamp": link.display_timestamp,
        }),
        Some(message_data::Body::LinkCompactStateBody(state)) => {
            json!({"type": sanitize_text(&state.r#type), "target_fids": state.target_fids})
        }
        Some(message_data::Body::VerificationAddAddressBody(verification)) => json!({
            "address": format!("0x{}", hex::encode(&verification.address)),
            "protocol": verification.protocol,
            "chain_id": verification.chain_id,
            "verification_type": verification.verification_type,
        }),
        Some(message_data::Body::VerificationRemoveBody(remove)) => json!({
            "address": format!("0x{}", hex::encode(&remove.address)),
            "protocol": remove.protocol,
        }),
        Some(message_data::Body::UserDataBody(user_data)) => {
            json!({"type": user_data.r#type, "value": sanitize_text(&user_data.value)})
        }
        Some(message_data::Body::UsernameProofBody(proof)) => json!({
            "name": sanitize_text(&String::from_utf8_lossy(&proof.name)),
            "fid": proof.fid,
            "owner": format!("0x{}", hex::encode(&proof.owner)),
            "type": proof.r#type,
            "timestamp": proof.timestamp,
        }),
        Some(message_data::Body::LendStorageBody(lend)) => {
            json!({"to_fid": lend.to_fid, "num_units": lend.num_units, "unit_type": lend.unit_type})
        }
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_what_must_not_collide() {
        let hash = [1u8; 20];
        assert_ne!(
            reaction_key(1, Some(&hash), None),
            reaction_key(2, Some(&hash), None)
        );
        assert_ne!(
            reaction_key(1, Some(b"ab"), None),
            reaction_key(1, None, Some("ab"))
        );
        assert_ne!(link_key("follow", 1), link_key("follow", 2));
        assert_ne!(link_key("follow", 1), link_key("block", 1));
    }

    #[test]
    fn a_split_keeps_every_row_and_removes_with_their_set() {
        let remove = |set_kind| RemoveRow {
            hash: vec![set_kind as u8],
            set_kind,
            fid: 1,
            crdt_key: Vec::new(),
            timestamp: 0,
        };
        let mut batch = Batch {
            removes: vec![
                remove(SetKind::Cast),
                remove(SetKind::Link),
                remove(SetKind::Link),
            ],
            ..Batch::default()
        };
        batch.add_gone(
            vec![9],
            0,
            Some(RecheckRow {
                set_kind: SetKind::Reaction,
                fid: 1,
                key: Vec::new(),
            }),
        );
        batch.add_proof_gone("alice".into(), 1, 0, 0);
        let rows = batch.num_rows();
        let parts = batch.split();
        let summary: Vec<(BatchPart, usize)> =
            parts.iter().map(|(part, _, rows)| (*part, *rows)).collect();
        assert_eq!(
            summary,
            vec![
                (BatchPart::Casts, 1),
                (BatchPart::Links, 2),
                (BatchPart::UsernameProofs, 1),
                (BatchPart::Gone, 2),
            ]
        );
        assert_eq!(parts.iter().map(|(_, _, rows)| rows).sum::<usize>(), rows);
        let links = &parts[1].1;
        assert!(links.removes.iter().all(|r| r.set_kind == SetKind::Link));

        // Combined and cut back by shape, the parts come back whole and in order.
        let shapes: Vec<BatchShape> = parts.iter().map(|(_, batch, _)| batch.shape()).collect();
        let mut combined = Batch::default();
        for (_, batch, _) in parts.iter().cloned() {
            combined.extend(batch);
        }
        for ((_, part, rows), shape) in parts.iter().zip(&shapes) {
            let back = combined.take_front(shape);
            assert_eq!(back.num_rows(), *rows);
            assert_eq!(back.shape(), part.shape());
        }
        assert!(combined.is_empty());
    }
}
