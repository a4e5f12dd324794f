//! The dev hub's message store: the oracle every Waypoint test compares against.
//!
//! It follows Snapchain's merge rules set by set (the CRDTs of the Farcaster protocol):
//! - casts by hash: a CastRemove deletes its add and blocks it forever; two removes of the
//!   same target keep the later one;
//! - reactions by (fid, type, target), links by (fid, type, target_fid), verifications by
//!   (fid, address): the later timestamp wins; on a tie a remove beats an add, then the higher
//!   hash wins;
//! - user data by (fid, type): the later timestamp wins, then the higher hash;
//! - a LINK_COMPACT_STATE deletes, among the fid's links not newer than itself, every remove
//!   and every add whose target is not in its list, and rejects such adds merged later;
//! - fname proofs by name: the later proof wins.
//!
//! A merge returns the messages it superseded (they become `deleted_messages` of the event);
//! a message that loses to what is stored is rejected and produces no event.
//!
//! Besides the current contents, the store remembers every add it ever merged, so that
//! `dump_state` can list removed rows with `live = false`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use waypoint_proto::{
    CastAddBody, Message, MessageData, MessageType, OnChainEvent, OnChainEventType, ReactionBody,
    UserNameProof, cast_add_body, embed, link_body, message_data, reaction_body,
};

use super::sign::{HASH_LEN, Hash};
use crate::replica::{self, ReplicaState};

/// Ordering key of messages in every listing: (Farcaster timestamp, hash).
pub(crate) type TsHash = (u32, Hash);

/// Length of a message page token: 4 bytes of timestamp and the 20-byte hash of the last row.
const MESSAGE_TOKEN_LEN: usize = 4 + HASH_LEN;

/// Page size when a request leaves it out (the node's PAGE_SIZE_MAX; not a clamp).
pub(crate) const DEFAULT_PAGE_SIZE: usize = 1000;

/// Why a message was not merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MergeError {
    #[error("message has already been merged")]
    Duplicate,
    #[error("message conflicts with a more recent message")]
    Conflict,
    #[error("message has no data")]
    NoData,
    #[error("message type {0} is not stored by the dev hub")]
    Unsupported(i32),
}

impl MergeError {
    /// The error code a node puts in MERGE_FAILURE events.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            MergeError::Duplicate => "bad_request.duplicate",
            MergeError::Conflict => "bad_request.conflict",
            MergeError::NoData | MergeError::Unsupported(_) => "bad_request.validation_failure",
        }
    }
}

/// The message sets of a fid, as the node's GetAll* RPCs group them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Set {
    Casts = 0,
    Reactions = 1,
    Links = 2,
    Verifications = 3,
    UserData = 4,
    LinkCompactState = 5,
}

const NUM_SETS: usize = 6;

/// The CRDT key a message occupies within its fid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CrdtKey {
    CastRemove(Hash),
    Reaction(i32, Target),
    Link(String, u64),
    Verification(Vec<u8>),
    UserData(i32),
    LinkCompactState(String),
}

/// What a reaction points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Cast(u64, Hash),
    Url(String),
}

/// How a message participates in the store.
struct Kind {
    set: Set,
    is_remove: bool,
    /// None for cast adds, which are keyed by their own hash.
    key: Option<CrdtKey>,
}

#[derive(Default)]
struct FidState {
    sets: [BTreeMap<TsHash, Hash>; NUM_SETS],
    keys: HashMap<CrdtKey, Hash>,
    onchain_events: Vec<OnChainEvent>,
}

/// Paging options of a request, with the node's defaults applied.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageOptions {
    pub page_size: Option<u32>,
    pub page_token: Option<Vec<u8>>,
    pub reverse: bool,
}

impl PageOptions {
    pub(crate) fn new(
        page_size: Option<u32>,
        page_token: Option<Vec<u8>>,
        reverse: Option<bool>,
    ) -> Self {
        PageOptions {
            page_size,
            // An empty token counts as absent.
            page_token: page_token.filter(|token| !token.is_empty()),
            reverse: reverse.unwrap_or(false),
        }
    }

    fn size(&self) -> usize {
        self.page_size
            .map_or(DEFAULT_PAGE_SIZE, |size| size as usize)
    }
}

/// A page of messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    pub messages: Vec<Message>,
    pub next_page_token: Option<Vec<u8>>,
}

/// A page token that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid page token ({len} bytes)")]
pub(crate) struct BadPageToken {
    pub len: usize,
}

/// What merging a fname proof changed besides adding it.
#[derive(Debug, Clone, Default)]
pub(crate) struct MergedProof {
    /// The proof the name had (it moved to another fid).
    pub replaced: Option<UserNameProof>,
    /// The fnames the proof's fid held until now (released: a fid holds one at a time).
    pub released: Vec<UserNameProof>,
}

/// A fname proof as merged, with whether it is still current.
#[derive(Debug, Clone)]
struct ProofRow {
    proof: UserNameProof,
    live: bool,
}

/// The store. Not thread-safe on its own: the hub keeps it behind a lock.
#[derive(Default)]
pub(crate) struct Store {
    /// Current contents by hash.
    messages: HashMap<Hash, Arc<Message>>,
    fids: HashMap<u64, FidState>,
    casts_by_parent_cast: HashMap<(u64, Hash), BTreeSet<TsHash>>,
    casts_by_parent_url: HashMap<String, BTreeSet<TsHash>>,
    casts_by_mention: HashMap<u64, BTreeSet<TsHash>>,
    reactions_by_target: HashMap<Target, BTreeSet<TsHash>>,
    links_by_target: HashMap<u64, BTreeSet<TsHash>>,
    /// Every cast, reaction, link and verification add ever merged.
    ever_adds: HashMap<Hash, Arc<Message>>,
    /// The newest user data ever merged per (fid, type).
    user_data_rows: HashMap<(u64, i32), Arc<Message>>,
    /// Fname proofs by name: the newest ever merged.
    proofs: BTreeMap<Vec<u8>, ProofRow>,
}

fn hash_of(message: &Message) -> Option<Hash> {
    Hash::try_from(message.hash.as_slice()).ok()
}

fn ts_hash(message: &Message) -> Option<TsHash> {
    let data = message.data.as_ref()?;
    Some((data.timestamp, hash_of(message)?))
}

fn reaction_target(body: &ReactionBody) -> Option<Target> {
    match body.target.as_ref()? {
        reaction_body::Target::TargetCastId(cast_id) => Some(Target::Cast(
            cast_id.fid,
            Hash::try_from(cast_id.hash.as_slice()).ok()?,
        )),
        reaction_body::Target::TargetUrl(url) => Some(Target::Url(url.clone())),
    }
}

fn kind_of(data: &MessageData) -> Option<Kind> {
    use message_data::Body;
    let kind = |set, is_remove, key| {
        Some(Kind {
            set,
            is_remove,
            key,
        })
    };
    let message_type = MessageType::try_from(data.r#type).ok()?;
    match (message_type, data.body.as_ref()?) {
        (MessageType::CastAdd, Body::CastAddBody(_)) => kind(Set::Casts, false, None),
        (MessageType::CastRemove, Body::CastRemoveBody(body)) => kind(
            Set::Casts,
            true,
            Some(CrdtKey::CastRemove(
                Hash::try_from(body.target_hash.as_slice()).ok()?,
            )),
        ),
        (MessageType::ReactionAdd | MessageType::ReactionRemove, Body::ReactionBody(body)) => kind(
            Set::Reactions,
            message_type == MessageType::ReactionRemove,
            Some(CrdtKey::Reaction(body.r#type, reaction_target(body)?)),
        ),
        (MessageType::LinkAdd | MessageType::LinkRemove, Body::LinkBody(body)) => {
            let link_body::Target::TargetFid(target) = body.target?;
            kind(
                Set::Links,
                message_type == MessageType::LinkRemove,
                Some(CrdtKey::Link(body.r#type.clone(), target)),
            )
        }
        (MessageType::VerificationAddEthAddress, Body::VerificationAddAddressBody(body)) => kind(
            Set::Verifications,
            false,
            Some(CrdtKey::Verification(body.address.clone())),
        ),
        (MessageType::VerificationRemove, Body::VerificationRemoveBody(body)) => kind(
            Set::Verifications,
            true,
            Some(CrdtKey::Verification(body.address.clone())),
        ),
        (MessageType::UserDataAdd, Body::UserDataBody(body)) => {
            kind(Set::UserData, false, Some(CrdtKey::UserData(body.r#type)))
        }
        (MessageType::LinkCompactState, Body::LinkCompactStateBody(body)) => kind(
            Set::LinkCompactState,
            false,
            Some(CrdtKey::LinkCompactState(body.r#type.clone())),
        ),
        _ => None,
    }
}

/// Whether `new` beats `existing` for the same CRDT key: later timestamp, then remove over
/// add, then higher hash.
fn wins(new: (TsHash, bool), existing: (TsHash, bool)) -> bool {
    let ((new_ts, new_hash), new_remove) = new;
    let ((old_ts, old_hash), old_remove) = existing;
    if new_ts != old_ts {
        return new_ts > old_ts;
    }
    if new_remove != old_remove {
        return new_remove;
    }
    new_hash > old_hash
}

fn is_remove(message: &Message) -> bool {
    message
        .data
        .as_ref()
        .and_then(kind_of)
        .is_some_and(|kind| kind.is_remove)
}

fn link_of(message: &Message) -> Option<(String, u64, bool)> {
    let data = message.data.as_ref()?;
    let Some(message_data::Body::LinkBody(body)) = data.body.as_ref() else {
        return None;
    };
    let link_body::Target::TargetFid(target) = body.target?;
    Some((
        body.r#type.clone(),
        target,
        data.r#type == MessageType::LinkRemove as i32,
    ))
}

fn token_of(key: &TsHash) -> Vec<u8> {
    let mut token = Vec::with_capacity(MESSAGE_TOKEN_LEN);
    token.extend_from_slice(&key.0.to_be_bytes());
    token.extend_from_slice(&key.1);
    token
}

fn key_of_token(token: &[u8]) -> Result<TsHash, BadPageToken> {
    if token.len() != MESSAGE_TOKEN_LEN {
        return Err(BadPageToken { len: token.len() });
    }
    let mut ts = [0u8; 4];
    ts.copy_from_slice(&token[..4]);
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(&token[4..]);
    Ok((u32::from_be_bytes(ts), hash))
}

/// Pages through `keys` in (timestamp, hash) order: rows after the token, kept by `keep`,
/// at most the page size of them; a token is returned whenever the page filled up.
fn page_of<'a>(
    keys: impl DoubleEndedIterator<Item = &'a TsHash> + 'a,
    range: impl Fn(Bound<TsHash>, Bound<TsHash>) -> Box<dyn DoubleEndedIterator<Item = &'a TsHash> + 'a>,
    options: &PageOptions,
    messages: &HashMap<Hash, Arc<Message>>,
    keep: impl Fn(&Message) -> bool,
) -> Result<Page, BadPageToken> {
    let after = options
        .page_token
        .as_deref()
        .map(key_of_token)
        .transpose()?;
    let iter: Box<dyn Iterator<Item = &TsHash>> = match (after, options.reverse) {
        (None, false) => Box::new(keys),
        (None, true) => Box::new(keys.rev()),
        (Some(key), false) => Box::new(range(Bound::Excluded(key), Bound::Unbounded)),
        (Some(key), true) => Box::new(range(Bound::Unbounded, Bound::Excluded(key)).rev()),
    };
    let size = options.size();
    let mut page = Page::default();
    for key in iter {
        let Some(message) = messages.get(&key.1) else {
            continue;
        };
        if !keep(message) {
            continue;
        }
        page.messages.push(message.as_ref().clone());
        if page.messages.len() >= size {
            page.next_page_token = Some(token_of(key));
            break;
        }
    }
    Ok(page)
}

fn page_of_set(
    set: &BTreeSet<TsHash>,
    options: &PageOptions,
    messages: &HashMap<Hash, Arc<Message>>,
    keep: impl Fn(&Message) -> bool,
) -> Result<Page, BadPageToken> {
    page_of(
        set.iter(),
        |low, high| Box::new(set.range((low, high))),
        options,
        messages,
        keep,
    )
}

fn page_of_map(
    map: &BTreeMap<TsHash, Hash>,
    options: &PageOptions,
    messages: &HashMap<Hash, Arc<Message>>,
    keep: impl Fn(&Message) -> bool,
) -> Result<Page, BadPageToken> {
    page_of(
        map.keys(),
        |low, high| Box::new(map.range((low, high)).map(|(key, _)| key)),
        options,
        messages,
        keep,
    )
}

impl Store {
    pub(crate) fn new() -> Store {
        Store::default()
    }

    /// Number of messages currently stored.
    pub(crate) fn num_messages(&self) -> usize {
        self.messages.len()
    }

    /// Number of fid registrations.
    pub(crate) fn num_registrations(&self) -> u64 {
        self.fids
            .values()
            .map(|state| {
                state
                    .onchain_events
                    .iter()
                    .filter(|event| is_register(event))
                    .count() as u64
            })
            .sum()
    }

    /// The stored message with this hash.
    pub(crate) fn get(&self, hash: &[u8]) -> Option<&Arc<Message>> {
        self.messages.get(&Hash::try_from(hash).ok()?)
    }

    /// Merges a message. Ok holds the messages it superseded.
    pub(crate) fn merge(&mut self, message: Arc<Message>) -> Result<Vec<Arc<Message>>, MergeError> {
        let data = message.data.as_ref().ok_or(MergeError::NoData)?;
        let kind = kind_of(data).ok_or(MergeError::Unsupported(data.r#type))?;
        let hash = hash_of(&message).ok_or(MergeError::NoData)?;
        if self.messages.contains_key(&hash) {
            return Err(MergeError::Duplicate);
        }
        let fid = data.fid;
        let new_key: TsHash = (data.timestamp, hash);
        let state = self.fids.entry(fid).or_default();
        let mut deleted: Vec<Hash> = Vec::new();

        match (&kind.set, &kind.key) {
            (Set::Casts, None) => {
                // A removed cast can never come back.
                if state.keys.contains_key(&CrdtKey::CastRemove(hash)) {
                    return Err(MergeError::Conflict);
                }
            }
            (Set::LinkCompactState, Some(key @ CrdtKey::LinkCompactState(link_type))) => {
                if let Some(existing) = state.keys.get(key).and_then(|h| self.messages.get(h)) {
                    let existing_ts = existing.data.as_ref().map_or(0, |d| d.timestamp);
                    if existing_ts >= data.timestamp {
                        return Err(MergeError::Conflict);
                    }
                    deleted.push(hash_of(existing).ok_or(MergeError::NoData)?);
                }
                let Some(message_data::Body::LinkCompactStateBody(body)) = data.body.as_ref()
                else {
                    return Err(MergeError::NoData);
                };
                for (key, link_hash) in state.sets[Set::Links as usize].iter() {
                    if key.0 > data.timestamp {
                        break;
                    }
                    let Some(link) = self.messages.get(link_hash) else {
                        continue;
                    };
                    let Some((this_type, target, remove)) = link_of(link) else {
                        continue;
                    };
                    if this_type == *link_type && (remove || !body.target_fids.contains(&target)) {
                        deleted.push(*link_hash);
                    }
                }
            }
            (_, Some(key)) => {
                if let Some(existing_hash) = state.keys.get(key)
                    && let Some(existing) = self.messages.get(existing_hash)
                {
                    let existing_key = ts_hash(existing).ok_or(MergeError::NoData)?;
                    if !wins(
                        (new_key, kind.is_remove),
                        (existing_key, is_remove(existing)),
                    ) {
                        return Err(MergeError::Conflict);
                    }
                    deleted.push(*existing_hash);
                }
                if let CrdtKey::CastRemove(target) = key
                    && let Some(add) = self.messages.get(target)
                    && add
                        .data
                        .as_ref()
                        .is_some_and(|d| d.fid == fid && d.r#type == MessageType::CastAdd as i32)
                {
                    deleted.push(*target);
                }
                if let CrdtKey::Link(link_type, target) = key
                    && !kind.is_remove
                    && let Some(compact) = state
                        .keys
                        .get(&CrdtKey::LinkCompactState(link_type.clone()))
                        .and_then(|h| self.messages.get(h))
                    && let Some(compact_data) = compact.data.as_ref()
                    && let Some(message_data::Body::LinkCompactStateBody(body)) =
                        compact_data.body.as_ref()
                    && data.timestamp < compact_data.timestamp
                    && !body.target_fids.contains(target)
                {
                    return Err(MergeError::Conflict);
                }
            }
            (_, None) => return Err(MergeError::Unsupported(data.r#type)),
        }

        let mut removed = Vec::with_capacity(deleted.len());
        for hash in deleted {
            if let Some(old) = self.delete(&hash) {
                removed.push(old);
            }
        }
        self.insert(message, kind);
        Ok(removed)
    }

    fn insert(&mut self, message: Arc<Message>, kind: Kind) {
        let Some(data) = message.data.as_ref() else {
            return;
        };
        let Some(hash) = hash_of(&message) else {
            return;
        };
        let key: TsHash = (data.timestamp, hash);
        let fid = data.fid;
        let state = self.fids.entry(fid).or_default();
        state.sets[kind.set as usize].insert(key, hash);
        if let Some(crdt_key) = kind.key.clone() {
            state.keys.insert(crdt_key, hash);
        }
        self.index(&message, key, true);
        let is_add = !kind.is_remove;
        match kind.set {
            Set::Casts | Set::Reactions | Set::Links | Set::Verifications if is_add => {
                self.ever_adds.insert(hash, message.clone());
            }
            Set::UserData => {
                if let Some(CrdtKey::UserData(user_data_type)) = kind.key {
                    let row = self
                        .user_data_rows
                        .entry((fid, user_data_type))
                        .or_insert_with(|| message.clone());
                    if ts_hash(row).is_some_and(|old| old < key) {
                        *row = message.clone();
                    }
                }
            }
            _ => {}
        }
        self.messages.insert(hash, message);
    }

    /// Takes a message out of the store (superseded, pruned or revoked).
    pub(crate) fn delete(&mut self, hash: &[u8]) -> Option<Arc<Message>> {
        let hash = Hash::try_from(hash).ok()?;
        let message = self.messages.remove(&hash)?;
        let data = message.data.as_ref()?;
        let kind = kind_of(data)?;
        let key: TsHash = (data.timestamp, hash);
        if let Some(state) = self.fids.get_mut(&data.fid) {
            state.sets[kind.set as usize].remove(&key);
            if let Some(crdt_key) = kind.key.as_ref()
                && state.keys.get(crdt_key) == Some(&hash)
            {
                state.keys.remove(crdt_key);
            }
        }
        self.index(&message, key, false);
        Some(message)
    }

    /// Adds or removes a message in the secondary indexes (by parent, mention, target).
    fn index(&mut self, message: &Message, key: TsHash, add: bool) {
        fn apply<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, BTreeSet<TsHash>>,
            index_key: K,
            key: TsHash,
            add: bool,
        ) {
            if add {
                map.entry(index_key).or_default().insert(key);
            } else if let Some(set) = map.get_mut(&index_key) {
                set.remove(&key);
                if set.is_empty() {
                    map.remove(&index_key);
                }
            }
        }
        let Some(data) = message.data.as_ref() else {
            return;
        };
        let Some(body) = data.body.as_ref() else {
            return;
        };
        match body {
            message_data::Body::CastAddBody(cast) => {
                match cast.parent.as_ref() {
                    Some(cast_add_body::Parent::ParentCastId(parent)) => {
                        if let Ok(parent_hash) = Hash::try_from(parent.hash.as_slice()) {
                            apply(
                                &mut self.casts_by_parent_cast,
                                (parent.fid, parent_hash),
                                key,
                                add,
                            );
                        }
                    }
                    Some(cast_add_body::Parent::ParentUrl(url)) => {
                        apply(&mut self.casts_by_parent_url, url.clone(), key, add);
                    }
                    None => {}
                }
                let mut mentioned: Vec<u64> = cast.mentions.clone();
                mentioned.sort_unstable();
                mentioned.dedup();
                for fid in mentioned {
                    apply(&mut self.casts_by_mention, fid, key, add);
                }
            }
            message_data::Body::ReactionBody(reaction)
                if data.r#type == MessageType::ReactionAdd as i32 =>
            {
                if let Some(target) = reaction_target(reaction) {
                    apply(&mut self.reactions_by_target, target, key, add);
                }
            }
            message_data::Body::LinkBody(link) if data.r#type == MessageType::LinkAdd as i32 => {
                if let Some(link_body::Target::TargetFid(target)) = link.target {
                    apply(&mut self.links_by_target, target, key, add);
                }
            }
            _ => {}
        }
    }

    /// Records an on-chain event for its fid.
    pub(crate) fn merge_onchain_event(&mut self, event: OnChainEvent) {
        self.fids
            .entry(event.fid)
            .or_default()
            .onchain_events
            .push(event);
    }

    /// Merges a fname proof. Ok holds the proof it replaced (a transfer of the name), if any,
    /// and the fnames its fid held until now: a fid holds one fname at a time, so a name it
    /// receives releases the one it had. A proof older than the current one for the name is
    /// rejected.
    pub(crate) fn merge_username_proof(
        &mut self,
        proof: UserNameProof,
    ) -> Result<MergedProof, MergeError> {
        let replaced = match self.proofs.get_mut(&proof.name) {
            Some(row) if row.live => {
                let newer = (proof.timestamp, proof.fid) > (row.proof.timestamp, row.proof.fid);
                if !newer {
                    return Err(if row.proof == proof {
                        MergeError::Duplicate
                    } else {
                        MergeError::Conflict
                    });
                }
                Some(std::mem::replace(&mut row.proof, proof.clone()))
            }
            _ => {
                self.proofs.insert(
                    proof.name.clone(),
                    ProofRow {
                        proof: proof.clone(),
                        live: true,
                    },
                );
                None
            }
        };
        let mut released = Vec::new();
        for row in self.proofs.values_mut() {
            if row.live && row.proof.fid == proof.fid && row.proof.name != proof.name {
                row.live = false;
                released.push(row.proof.clone());
            }
        }
        Ok(MergedProof { replaced, released })
    }

    // ---- queries ----

    fn fid_set(&self, fid: u64, set: Set) -> Option<&BTreeMap<TsHash, Hash>> {
        self.fids.get(&fid).map(|state| &state.sets[set as usize])
    }

    /// GetAll*MessagesByFid: adds and removes of a set, inclusive Farcaster-second bounds.
    pub(crate) fn all_messages(
        &self,
        fid: u64,
        set: Set,
        start: Option<u32>,
        stop: Option<u32>,
        options: &PageOptions,
    ) -> Result<Page, BadPageToken> {
        let Some(map) = self.fid_set(fid, set) else {
            return Ok(Page::default());
        };
        let start = start.unwrap_or(u32::MIN);
        let stop = stop.unwrap_or(u32::MAX);
        page_of_map(map, options, &self.messages, |message| {
            message
                .data
                .as_ref()
                .is_some_and(|data| data.timestamp >= start && data.timestamp <= stop)
        })
    }

    /// *ByFid: the adds of a set that `keep` accepts.
    pub(crate) fn adds(
        &self,
        fid: u64,
        set: Set,
        options: &PageOptions,
        keep: impl Fn(&MessageData) -> bool,
    ) -> Result<Page, BadPageToken> {
        let Some(map) = self.fid_set(fid, set) else {
            return Ok(Page::default());
        };
        page_of_map(map, options, &self.messages, |message| {
            !is_remove(message) && message.data.as_ref().is_some_and(&keep)
        })
    }

    /// GetCastsByParent with a parent cast.
    pub(crate) fn casts_by_parent_cast(
        &self,
        fid: u64,
        hash: &[u8],
        options: &PageOptions,
    ) -> Result<Page, BadPageToken> {
        let set = Hash::try_from(hash)
            .ok()
            .and_then(|hash| self.casts_by_parent_cast.get(&(fid, hash)));
        match set {
            Some(set) => page_of_set(set, options, &self.messages, |_| true),
            None => Ok(Page::default()),
        }
    }

    /// GetCastsByParent with a parent URL.
    pub(crate) fn casts_by_parent_url(
        &self,
        url: &str,
        options: &PageOptions,
    ) -> Result<Page, BadPageToken> {
        match self.casts_by_parent_url.get(url) {
            Some(set) => page_of_set(set, options, &self.messages, |_| true),
            None => Ok(Page::default()),
        }
    }

    /// GetCastsByMention.
    pub(crate) fn casts_by_mention(
        &self,
        fid: u64,
        options: &PageOptions,
    ) -> Result<Page, BadPageToken> {
        match self.casts_by_mention.get(&fid) {
            Some(set) => page_of_set(set, options, &self.messages, |_| true),
            None => Ok(Page::default()),
        }
    }

    /// GetReactionsByCast / GetReactionsByTarget.
    pub(crate) fn reactions_by_target(
        &self,
        target: &Target,
        reaction_type: Option<i32>,
        options: &PageOptions,
    ) -> Result<Page, BadPageToken> {
        match self.reactions_by_target.get(target) {
            Some(set) => page_of_set(set, options, &self.messages, |message| {
                reaction_type.is_none_or(|wanted| reaction_type_of(message) == Some(wanted))
            }),
            None => Ok(Page::default()),
        }
    }

    /// GetLinksByTarget.
    pub(crate) fn links_by_target(
        &self,
        target_fid: u64,
        link_type: Option<&str>,
        options: &PageOptions,
    ) -> Result<Page, BadPageToken> {
        match self.links_by_target.get(&target_fid) {
            Some(set) => page_of_set(set, options, &self.messages, |message| {
                link_type.is_none_or(|wanted| {
                    link_of(message).is_some_and(|(this_type, _, _)| this_type == wanted)
                })
            }),
            None => Ok(Page::default()),
        }
    }

    /// GetLinkCompactStateMessageByFid.
    pub(crate) fn compact_states(
        &self,
        fid: u64,
        options: &PageOptions,
    ) -> Result<Page, BadPageToken> {
        self.adds(fid, Set::LinkCompactState, options, |_| true)
    }

    /// GetCast: the add, if it is stored and belongs to the fid.
    pub(crate) fn cast(&self, fid: u64, hash: &[u8]) -> Option<&Arc<Message>> {
        self.get(hash).filter(|message| {
            message
                .data
                .as_ref()
                .is_some_and(|data| data.fid == fid && data.r#type == MessageType::CastAdd as i32)
        })
    }

    fn add_by_key(&self, fid: u64, key: &CrdtKey) -> Option<&Arc<Message>> {
        let hash = self.fids.get(&fid)?.keys.get(key)?;
        self.messages
            .get(hash)
            .filter(|message| !is_remove(message))
    }

    /// GetReaction.
    pub(crate) fn reaction(
        &self,
        fid: u64,
        reaction_type: i32,
        target: Target,
    ) -> Option<&Arc<Message>> {
        self.add_by_key(fid, &CrdtKey::Reaction(reaction_type, target))
    }

    /// GetLink.
    pub(crate) fn link(&self, fid: u64, link_type: &str, target_fid: u64) -> Option<&Arc<Message>> {
        self.add_by_key(fid, &CrdtKey::Link(link_type.to_string(), target_fid))
    }

    /// GetUserData.
    pub(crate) fn user_data(&self, fid: u64, user_data_type: i32) -> Option<&Arc<Message>> {
        self.add_by_key(fid, &CrdtKey::UserData(user_data_type))
    }

    /// GetVerification.
    pub(crate) fn verification(&self, fid: u64, address: &[u8]) -> Option<&Arc<Message>> {
        self.add_by_key(fid, &CrdtKey::Verification(address.to_vec()))
    }

    /// Every on-chain event of a type for a fid, in merge order.
    pub(crate) fn onchain_events(&self, fid: u64, event_type: i32) -> Vec<OnChainEvent> {
        self.fids
            .get(&fid)
            .map(|state| {
                state
                    .onchain_events
                    .iter()
                    .filter(|event| event.r#type == event_type)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ID_REGISTER events of every fid, in fid order.
    pub(crate) fn id_register_events(&self) -> Vec<OnChainEvent> {
        let mut fids: Vec<u64> = self.fids.keys().copied().collect();
        fids.sort_unstable();
        fids.into_iter()
            .flat_map(|fid| self.onchain_events(fid, OnChainEventType::IdRegister as i32))
            .collect()
    }

    /// The current fname proofs of a fid.
    pub(crate) fn username_proofs(&self, fid: u64) -> Vec<UserNameProof> {
        self.proofs
            .values()
            .filter(|row| row.live && row.proof.fid == fid)
            .map(|row| row.proof.clone())
            .collect()
    }

    /// The current proof for a name.
    pub(crate) fn username_proof(&self, name: &[u8]) -> Option<&UserNameProof> {
        self.proofs
            .get(name)
            .filter(|row| row.live)
            .map(|row| &row.proof)
    }

    /// The current messages of a fid in a set (adds and removes), oldest first.
    pub(crate) fn fid_messages(&self, fid: u64, set: Set) -> Vec<Arc<Message>> {
        self.fid_set(fid, set)
            .map(|map| {
                map.values()
                    .filter_map(|hash| self.messages.get(hash).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds this store's rows to a replica (fname proofs only when `with_proofs`, as every
    /// shard holds the same ones). The caller sorts.
    pub(crate) fn dump_into(&self, state: &mut ReplicaState, with_proofs: bool) {
        for (hash, message) in &self.ever_adds {
            let live = self.messages.contains_key(hash);
            push_add_row(state, message, live);
        }
        for message in self.user_data_rows.values() {
            let Some(data) = message.data.as_ref() else {
                continue;
            };
            let Some(message_data::Body::UserDataBody(body)) = data.body.as_ref() else {
                continue;
            };
            let live = hash_of(message).is_some_and(|hash| self.messages.contains_key(&hash));
            state.user_data.push(replica::UserDataRow {
                fid: data.fid,
                user_data_type: body.r#type,
                hash: hex::encode(&message.hash),
                timestamp: u64::from(data.timestamp),
                value: replica::sanitize_text(&body.value).into_owned(),
                live,
            });
        }
        for row in self.proofs.values().filter(|_| with_proofs) {
            state.username_proofs.push(replica::UsernameProofRow {
                name: String::from_utf8_lossy(&row.proof.name).into_owned(),
                fid: row.proof.fid,
                proof_type: row.proof.r#type,
                owner: hex::encode(&row.proof.owner),
                timestamp: row.proof.timestamp,
                live: row.live,
            });
        }
        for fid_state in self.fids.values() {
            for event in &fid_state.onchain_events {
                state.onchain_events.push(replica::OnchainEventRow {
                    chain_id: event.chain_id,
                    tx_hash: hex::encode(&event.transaction_hash),
                    log_index: event.log_index,
                    fid: event.fid,
                    event_type: event.r#type,
                    block_number: event.block_number,
                    block_timestamp: event.block_timestamp,
                });
            }
        }
    }

    /// This store's rows as a sorted replica.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> ReplicaState {
        let mut state = ReplicaState::default();
        self.dump_into(&mut state, true);
        state.sort();
        state
    }
}

fn is_register(event: &OnChainEvent) -> bool {
    use waypoint_proto::{IdRegisterEventType, on_chain_event};
    matches!(
        event.body.as_ref(),
        Some(on_chain_event::Body::IdRegisterEventBody(body))
            if body.event_type == IdRegisterEventType::Register as i32
    )
}

fn reaction_type_of(message: &Message) -> Option<i32> {
    match message.data.as_ref()?.body.as_ref()? {
        message_data::Body::ReactionBody(body) => Some(body.r#type),
        _ => None,
    }
}

fn push_add_row(state: &mut ReplicaState, message: &Message, live: bool) {
    let Some(data) = message.data.as_ref() else {
        return;
    };
    let hash = hex::encode(&message.hash);
    let timestamp = u64::from(data.timestamp);
    match data.body.as_ref() {
        Some(message_data::Body::CastAddBody(cast)) => {
            state
                .casts
                .push(cast_row(cast, hash, data.fid, timestamp, live));
        }
        Some(message_data::Body::ReactionBody(reaction)) => {
            let (target_cast_fid, target_cast_hash, target_url) = match reaction.target.as_ref() {
                Some(reaction_body::Target::TargetCastId(cast_id)) => {
                    (Some(cast_id.fid), Some(hex::encode(&cast_id.hash)), None)
                }
                Some(reaction_body::Target::TargetUrl(url)) => (None, None, Some(url.clone())),
                None => (None, None, None),
            };
            state.reactions.push(replica::ReactionRow {
                hash,
                fid: data.fid,
                timestamp,
                reaction_type: reaction.r#type,
                target_cast_fid,
                target_cast_hash,
                target_url,
                live,
            });
        }
        Some(message_data::Body::LinkBody(link)) => {
            let target_fid = match link.target {
                Some(link_body::Target::TargetFid(target)) => target,
                None => 0,
            };
            state.links.push(replica::LinkRow {
                hash,
                fid: data.fid,
                timestamp,
                link_type: link.r#type.clone(),
                target_fid,
                display_timestamp: link.display_timestamp.map(u64::from),
                live,
            });
        }
        Some(message_data::Body::VerificationAddAddressBody(verification)) => {
            state.verifications.push(replica::VerificationRow {
                hash,
                fid: data.fid,
                timestamp,
                address: hex::encode(&verification.address),
                protocol: verification.protocol,
                live,
            });
        }
        _ => {}
    }
}

fn cast_row(
    cast: &CastAddBody,
    hash: String,
    fid: u64,
    timestamp: u64,
    live: bool,
) -> replica::CastRow {
    let (parent_fid, parent_hash, parent_url) = match cast.parent.as_ref() {
        Some(cast_add_body::Parent::ParentCastId(parent)) => {
            (Some(parent.fid), Some(hex::encode(&parent.hash)), None)
        }
        Some(cast_add_body::Parent::ParentUrl(url)) => (None, None, Some(url.clone())),
        None => (None, None, None),
    };
    let embeds = cast
        .embeds
        .iter()
        .filter_map(|embed| match embed.embed.as_ref()? {
            embed::Embed::Url(url) => Some(replica::EmbedRow::Url(url.clone())),
            embed::Embed::CastId(cast_id) => Some(replica::EmbedRow::Cast {
                fid: cast_id.fid,
                hash: hex::encode(&cast_id.hash),
            }),
        })
        .collect();
    replica::CastRow {
        hash,
        fid,
        timestamp,
        text: replica::sanitize_text(&cast.text).into_owned(),
        parent_fid,
        parent_hash,
        parent_url,
        embeds,
        mentions: cast.mentions.clone(),
        mentions_positions: cast.mentions_positions.clone(),
        live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devhub::sign;
    use waypoint_proto::{
        CastId, CastRemoveBody, LinkBody, LinkCompactStateBody, ReactionType, UserDataBody,
        UserDataType,
    };

    fn signed(
        fid: u64,
        timestamp: u32,
        message_type: MessageType,
        body: message_data::Body,
    ) -> Arc<Message> {
        let key = sign::fid_signing_key(1, fid);
        Arc::new(sign::sign(
            MessageData {
                r#type: message_type as i32,
                fid,
                timestamp,
                network: 1,
                body: Some(body),
            },
            &key,
        ))
    }

    fn cast(fid: u64, timestamp: u32, text: &str) -> Arc<Message> {
        signed(
            fid,
            timestamp,
            MessageType::CastAdd,
            message_data::Body::CastAddBody(CastAddBody {
                text: text.to_string(),
                ..Default::default()
            }),
        )
    }

    fn cast_remove(fid: u64, timestamp: u32, target: &[u8]) -> Arc<Message> {
        signed(
            fid,
            timestamp,
            MessageType::CastRemove,
            message_data::Body::CastRemoveBody(CastRemoveBody {
                target_hash: target.to_vec(),
            }),
        )
    }

    fn like(fid: u64, timestamp: u32, remove: bool, target: &CastId) -> Arc<Message> {
        signed(
            fid,
            timestamp,
            if remove {
                MessageType::ReactionRemove
            } else {
                MessageType::ReactionAdd
            },
            message_data::Body::ReactionBody(ReactionBody {
                r#type: ReactionType::Like as i32,
                target: Some(reaction_body::Target::TargetCastId(target.clone())),
            }),
        )
    }

    fn follow(fid: u64, timestamp: u32, remove: bool, target: u64) -> Arc<Message> {
        signed(
            fid,
            timestamp,
            if remove {
                MessageType::LinkRemove
            } else {
                MessageType::LinkAdd
            },
            message_data::Body::LinkBody(LinkBody {
                r#type: "follow".to_string(),
                display_timestamp: None,
                target: Some(link_body::Target::TargetFid(target)),
            }),
        )
    }

    fn user_data(fid: u64, timestamp: u32, value: &str) -> Arc<Message> {
        signed(
            fid,
            timestamp,
            MessageType::UserDataAdd,
            message_data::Body::UserDataBody(UserDataBody {
                r#type: UserDataType::Bio as i32,
                value: value.to_string(),
            }),
        )
    }

    #[test]
    fn cast_remove_deletes_the_add_and_blocks_it() {
        let mut store = Store::new();
        let add = cast(1, 10, "hello");
        assert_eq!(store.merge(add.clone()), Ok(vec![]));
        let remove = cast_remove(1, 11, &add.hash);
        assert_eq!(store.merge(remove.clone()), Ok(vec![add.clone()]));
        assert_eq!(store.merge(add.clone()), Err(MergeError::Conflict));
        let page = store
            .all_messages(1, Set::Casts, None, None, &PageOptions::default())
            .unwrap();
        assert_eq!(page.messages, vec![remove.as_ref().clone()]);
        let dump = store.dump();
        assert_eq!(dump.casts.len(), 1);
        assert!(!dump.casts[0].live);
    }

    #[test]
    fn remove_before_add_blocks_the_add() {
        let mut store = Store::new();
        let add = cast(1, 10, "hello");
        store.merge(cast_remove(1, 11, &add.hash)).unwrap();
        assert_eq!(store.merge(add), Err(MergeError::Conflict));
    }

    #[test]
    fn reactions_follow_last_write_wins_with_remove_bias() {
        let mut store = Store::new();
        let target = CastId {
            fid: 2,
            hash: vec![7; 20],
        };
        let add = like(1, 10, false, &target);
        store.merge(add.clone()).unwrap();
        // Same timestamp: the remove wins whichever order they arrive in.
        let remove = like(1, 10, true, &target);
        assert_eq!(store.merge(remove.clone()), Ok(vec![add.clone()]));
        assert_eq!(store.merge(add.clone()), Err(MergeError::Conflict));
        // An older add loses; a newer add wins.
        assert_eq!(
            store.merge(like(1, 9, false, &target)),
            Err(MergeError::Conflict)
        );
        let newer = like(1, 12, false, &target);
        assert_eq!(store.merge(newer.clone()), Ok(vec![remove]));
        assert!(store.reaction(1, 1, Target::Cast(2, [7; 20])).is_some());
        assert_eq!(store.merge(newer), Err(MergeError::Duplicate));
    }

    #[test]
    fn user_data_ties_go_to_the_higher_hash() {
        let mut store = Store::new();
        let a = user_data(1, 10, "a");
        let b = user_data(1, 10, "b");
        let (low, high) = if a.hash < b.hash { (a, b) } else { (b, a) };
        store.merge(high.clone()).unwrap();
        assert_eq!(store.merge(low), Err(MergeError::Conflict));
        let newer = user_data(1, 11, "c");
        assert_eq!(store.merge(newer.clone()), Ok(vec![high]));
        let dump = store.dump();
        assert_eq!(dump.user_data.len(), 1);
        assert_eq!(dump.user_data[0].value, "c");
        assert!(dump.user_data[0].live);
    }

    #[test]
    fn compact_state_drops_links_not_listed() {
        let mut store = Store::new();
        store.merge(follow(1, 10, false, 2)).unwrap();
        store.merge(follow(1, 11, false, 3)).unwrap();
        store.merge(follow(1, 12, true, 4)).unwrap();
        let compact = signed(
            1,
            20,
            MessageType::LinkCompactState,
            message_data::Body::LinkCompactStateBody(LinkCompactStateBody {
                r#type: "follow".to_string(),
                target_fids: vec![2],
            }),
        );
        let deleted = store.merge(compact).unwrap();
        assert_eq!(deleted.len(), 2);
        assert!(store.link(1, "follow", 2).is_some());
        assert!(store.link(1, "follow", 3).is_none());
        // An older add of an unlisted target can no longer merge; a newer one can.
        assert_eq!(
            store.merge(follow(1, 15, false, 5)),
            Err(MergeError::Conflict)
        );
        assert!(store.merge(follow(1, 25, false, 5)).is_ok());
        let page = store.compact_states(1, &PageOptions::default()).unwrap();
        assert_eq!(page.messages.len(), 1);
    }

    #[test]
    fn pages_fill_then_end_with_an_empty_page() {
        let mut store = Store::new();
        for timestamp in 0..4 {
            store
                .merge(cast(1, timestamp, &format!("c{timestamp}")))
                .unwrap();
        }
        let mut options = PageOptions::new(Some(2), None, None);
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = store
                .all_messages(1, Set::Casts, None, None, &options)
                .unwrap();
            pages += 1;
            seen.extend(
                page.messages
                    .iter()
                    .map(|m| m.data.as_ref().unwrap().timestamp),
            );
            match page.next_page_token {
                Some(token) => options.page_token = Some(token),
                None => {
                    assert!(page.messages.is_empty());
                    break;
                }
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, vec![0, 1, 2, 3]);
        let reversed = store
            .all_messages(
                1,
                Set::Casts,
                Some(1),
                Some(2),
                &PageOptions::new(None, None, Some(true)),
            )
            .unwrap();
        let timestamps: Vec<u32> = reversed
            .messages
            .iter()
            .map(|m| m.data.as_ref().unwrap().timestamp)
            .collect();
        assert_eq!(timestamps, vec![2, 1]);
        assert!(reversed.next_page_token.is_none());
    }
}
