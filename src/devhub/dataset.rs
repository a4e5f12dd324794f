//! The dev hub's dataset: a deterministic, realistic Farcaster history built from a seed, and
//! the generator of live messages that continues it.
//!
//! Per fid (1..=N): an ID_REGISTER, STORAGE_RENT and SIGNER ADD bundle on Optimism, an fname
//! proof, a profile (user data), verifications, casts (top level, replies, quotes, channel
//! posts, long casts, awkward text), reactions, follows, and a history of removes so that the
//! current state differs from everything ever sent: cast removes, unlikes, unfollows followed by
//! refollows, profile overwrites, verification removes and a few fname transfers.
//!
//! Everything depends only on the seed and the options: each fid draws from its own random
//! stream, so fids are generated in parallel and the result does not depend on thread timing.
//! Other fids' casts are referenced (replies, quotes, reactions) only through the casts built in
//! the first pass, which need no references themselves.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use waypoint_proto::{
    CastAddBody, CastId, CastRemoveBody, CastType, Embed, FarcasterNetwork, IdRegisterEventBody,
    IdRegisterEventType, LinkBody, Message, MessageData, MessageType, OnChainEvent,
    OnChainEventType, Protocol, ReactionBody, ReactionType, SignerEventBody, SignerEventType,
    StorageRentEventBody, UserDataBody, UserDataType, UserNameProof, UserNameType,
    VerificationAddAddressBody, VerificationRemoveBody, cast_add_body, embed, link_body,
    message_data, on_chain_event, reaction_body,
};

use super::sign::{self, Unsigned, derive_bytes};
use super::store::{Set, Store};
use crate::hub::ids;

/// End of the generated history: 2025-06-01T00:00:00Z in Farcaster seconds. Fixed so that a
/// seed always gives the same messages (and hashes).
pub(crate) const HISTORY_END: u32 = 139_276_800;

/// Length of the generated history (180 days).
const HISTORY_SPAN: u32 = 180 * 86_400;

/// Optimism mainnet: chain id, and a reference block to derive realistic block numbers
/// (one block every 2 seconds).
const OPTIMISM_CHAIN_ID: u32 = 10;
const OPTIMISM_REFERENCE_BLOCK: u64 = 105_235_063;
const OPTIMISM_REFERENCE_UNIX: u64 = 1_686_068_903;

/// Seconds of storage a rent buys (one year).
const STORAGE_RENT_SECONDS: u64 = 365 * 86_400;

const WORDS: &[&str] = &[
    "farcaster",
    "hello",
    "world",
    "building",
    "onchain",
    "frames",
    "today",
    "shipping",
    "gm",
    "coffee",
    "rust",
    "protocol",
    "hub",
    "snapchain",
    "degen",
    "base",
    "optimism",
    "weekend",
    "thread",
    "thoughts",
    "music",
    "photo",
    "sunset",
    "launch",
    "friends",
    "community",
    "open",
    "source",
    "question",
    "answer",
    "idea",
    "design",
    "cast",
    "channel",
    "replies",
    "writing",
    "reading",
    "testing",
    "deploy",
    "bug",
    "fixed",
    "finally",
    "great",
    "interesting",
    "new",
    "again",
    "why",
    "how",
    "maybe",
    "always",
    "never",
    "love",
    "this",
    "that",
    "with",
    "from",
    "about",
    "and",
    "the",
    "a",
    "is",
    "to",
    "of",
    "in",
    "for",
];

const EMOJI: &[&str] = &[
    "🟪",
    "🎩",
    "🚀",
    "🔥",
    "✨",
    "👀",
    "🙏",
    "🌈",
    "🧵",
    "❤️",
    "🫡",
    "👨‍👩‍👧",
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Grace", "Linus", "Dan", "Varun", "Vitalik", "Jesse", "Ana", "Yuki", "Omar",
    "Lena", "Kofi", "Mei", "Ravi", "Sofia", "Noor", "Ivan",
];

const LAST_NAMES: &[&str] = &[
    "Lovelace", "Turing", "Hopper", "Romero", "Sato", "Haddad", "Novak", "Mensah", "Chen", "Patel",
    "Garcia", "Khan", "Petrov", "Smith",
];

/// Channels (parent URLs): a few busy ones, so by-parent queries have real pages.
pub(crate) const CHANNEL_URLS: &[&str] = &[
    "https://warpcast.com/~/channel/dev",
    "https://warpcast.com/~/channel/farcaster",
    "https://warpcast.com/~/channel/music",
    "https://warpcast.com/~/channel/photography",
    "https://warpcast.com/~/channel/base",
    "chain://eip155:1/erc721:0x5ab6e8e2c7c6a5a5a2e1a9b3e2bd2f6b4e0a5b3c",
    "chain://eip155:8453/erc721:0x1234567890abcdef1234567890abcdef12345678",
];

/// Texts that stress a consumer's storage layer.
const AWKWARD_TEXTS: &[&str] = &[
    "it's \"quoted\" and 'single quoted'",
    "'; DROP TABLE casts; --",
    "Robert'); DELETE FROM messages WHERE ('1'='1",
    "\u{200F}مرحبا بالعالم\u{200F} right-to-left",
    "text with a \u{202E}reversed\u{202C} run",
    "back\\slash and %percent% and _under_score",
    "zero\u{0}byte inside",
    "\u{0}leading nul",
    "tab\tand\nnewline",
];

/// What the generator was asked to build.
#[derive(Debug, Clone)]
pub(crate) struct DatasetOptions {
    pub seed: u64,
    pub num_fids: u64,
    pub num_shards: u32,
    pub messages_per_fid: u32,
    pub network: FarcasterNetwork,
    /// Live messages take the wall clock's time instead of continuing the history's clock.
    pub wall_clock: bool,
    /// FIDs with exactly this many message slots instead of about `messages_per_fid`.
    pub heavy_fids: Vec<(u64, u32)>,
}

/// One thing merged into the hub, in history order.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    OnChain(OnChainEvent),
    Message(Arc<Message>),
    /// An fname proof (mirrored to every data shard).
    Proof(UserNameProof),
}

/// The generated history.
pub(crate) struct Dataset {
    /// Everything, in merge order.
    pub items: Vec<Item>,
    /// Signing keys, index fid - 1.
    pub keys: Arc<Vec<SigningKey>>,
    /// Casts live messages may reply to or react to.
    pub cast_targets: Vec<CastId>,
    /// Last message timestamp per fid, index fid - 1.
    pub fid_last_timestamp: Vec<u32>,
    pub num_messages: usize,
}

/// An item with its place in history.
struct Timed {
    timestamp: u32,
    fid: u64,
    seq: u32,
    item: TimedItem,
}

enum TimedItem {
    OnChain(OnChainEvent),
    Proof(UserNameProof),
    Message(Unsigned),
}

/// A cast built in the first pass (no references to other casts), as a target for others.
#[derive(Clone, Copy)]
struct CastTarget {
    timestamp: u32,
    fid: u64,
    hash: sign::Hash,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CastPlan {
    Standalone,
    Reply,
    Quote,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SlotKind {
    UserData(UserDataType),
    Verification,
    Cast(CastPlan),
    Reaction,
    Follow,
    CastRemove,
    Unlike,
    Unfollow,
    Refollow,
    VerificationRemove,
}

struct Slot {
    timestamp: u32,
    kind: SlotKind,
}

/// Output of the first pass for one fid.
struct FidPlan {
    fid: u64,
    slots: Vec<Slot>,
    /// Standalone casts, by slot index.
    standalone: Vec<(usize, Unsigned)>,
    timed: Vec<Timed>,
}

/// A stream of random numbers for one purpose of one fid.
pub(crate) fn rng_for(seed: u64, label: &str, index: u64) -> StdRng {
    StdRng::from_seed(derive_bytes(seed, label, index))
}

/// The custody address of a fid.
pub(crate) fn custody_address(seed: u64, fid: u64) -> Vec<u8> {
    derive_bytes(seed, "custody", fid)[..20].to_vec()
}

/// The fname a fid registers first.
pub(crate) fn fname(fid: u64) -> String {
    let word = WORDS[(fid as usize * 7) % WORDS.len()];
    // Fnames are at most 16 characters: 8 of word, up to 7 digits, and room for the "x" of
    // a renamed fid.
    let mut name: String = word.chars().take(8).collect();
    name.push_str(&fid.to_string());
    name
}

fn random_bytes(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng.fill(bytes.as_mut_slice());
    bytes
}

fn alphanumeric(rng: &mut impl Rng, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn random_url(rng: &mut impl Rng) -> String {
    match rng.random_range(0..5) {
        0 => format!("https://www.youtube.com/watch?v={}", alphanumeric(rng, 11)),
        1 => format!("https://i.imgur.com/{}.png", alphanumeric(rng, 7)),
        2 => format!(
            "https://zora.co/collect/base:0x{}/{}",
            hex::encode(random_bytes(rng, 20)),
            rng.random_range(1..500)
        ),
        3 => format!(
            "https://paragraph.xyz/@{}/{}",
            WORDS.choose(rng).copied().unwrap_or("post"),
            alphanumeric(rng, 10)
        ),
        _ => format!(
            "https://example.com/{}/{}?ref=farcaster",
            WORDS.choose(rng).copied().unwrap_or("page"),
            rng.random_range(1..100_000)
        ),
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate_bytes(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
}

/// Text of a cast: words, sometimes emoji or awkward content, and mentions (positions are byte
/// offsets into the text, sorted, at word boundaries).
pub(crate) fn cast_text(
    rng: &mut impl Rng,
    long: bool,
    num_fids: u64,
) -> (String, Vec<u64>, Vec<u32>) {
    let target = if long {
        rng.random_range(340..=1000)
    } else if rng.random_bool(0.1) {
        rng.random_range(200..=320)
    } else {
        rng.random_range(8..=140)
    };
    let mut text = String::new();
    let flavor = rng.random_range(0..100);
    if flavor < 8 {
        text.push_str(AWKWARD_TEXTS.choose(rng).copied().unwrap_or(""));
        text.push(' ');
    }
    while text.len() < target {
        if rng.random_bool(0.06) {
            text.push_str(EMOJI.choose(rng).copied().unwrap_or("🟪"));
        } else {
            text.push_str(WORDS.choose(rng).copied().unwrap_or("gm"));
        }
        text.push(' ');
    }
    let text_max = if long { 1024 } else { 320 };
    truncate_bytes(&mut text, text_max);
    let trimmed_len = text.trim_end_matches(' ').len();
    text.truncate(trimmed_len);
    if long && text.len() < 321 {
        while text.len() < 321 {
            text.push_str(" gm");
        }
    }

    let num_mentions = match rng.random_range(0..100) {
        0 => 10,
        1..=18 => rng.random_range(1..=3),
        _ => 0,
    };
    let mut mentions = Vec::new();
    let mut positions = Vec::new();
    if num_mentions > 0 && num_fids > 0 {
        let mut boundaries: Vec<u32> = text
            .char_indices()
            .filter(|(_, c)| *c == ' ')
            .map(|(index, _)| index as u32 + 1)
            .collect();
        boundaries.insert(0, 0);
        boundaries.push(text.len() as u32);
        boundaries.dedup();
        let mut chosen: Vec<u32> = (0..num_mentions)
            .filter_map(|_| boundaries.choose(rng).copied())
            .collect();
        chosen.sort_unstable();
        chosen.dedup();
        for position in chosen {
            positions.push(position);
            mentions.push(rng.random_range(1..=num_fids));
        }
    }
    (text, mentions, positions)
}

fn user_data_value(rng: &mut impl Rng, fid: u64, user_data_type: UserDataType) -> String {
    match user_data_type {
        UserDataType::Pfp => format!("https://i.imgur.com/{}.jpg", alphanumeric(rng, 7)),
        UserDataType::Display => {
            let mut name = format!(
                "{} {}",
                FIRST_NAMES.choose(rng).copied().unwrap_or("Ada"),
                LAST_NAMES.choose(rng).copied().unwrap_or("Lovelace")
            );
            if rng.random_bool(0.2) {
                name.push(' ');
                name.push_str(EMOJI.choose(rng).copied().unwrap_or("🎩"));
            }
            // Display names are at most 32 bytes.
            truncate_bytes(&mut name, 32);
            name
        }
        UserDataType::Bio => {
            let (mut text, _, _) = cast_text(rng, false, 0);
            truncate_bytes(&mut text, 256);
            text
        }
        UserDataType::Url => format!(
            "https://{}{}.xyz",
            WORDS.choose(rng).copied().unwrap_or("site"),
            fid
        ),
        UserDataType::Username => fname(fid),
        UserDataType::Location => format!(
            "geo:{:.2},{:.2}",
            rng.random_range(-80.0..80.0f64),
            rng.random_range(-170.0..170.0f64)
        ),
        UserDataType::Twitter => {
            // Twitter handles are at most 15 characters.
            let mut handle = format!("{}_{fid}", WORDS.choose(rng).copied().unwrap_or("x"));
            truncate_bytes(&mut handle, 15);
            handle
        }
        UserDataType::Github => format!("{}-{fid}", WORDS.choose(rng).copied().unwrap_or("gh")),
        _ => String::new(),
    }
}

fn optimism_block(unix: u64) -> u32 {
    let block = OPTIMISM_REFERENCE_BLOCK + unix.saturating_sub(OPTIMISM_REFERENCE_UNIX) / 2;
    u32::try_from(block).unwrap_or(u32::MAX)
}

/// Builds one on-chain event; `tx` names the transaction it came in.
fn onchain_event(
    seed: u64,
    fid: u64,
    farcaster_time: u32,
    tx: u64,
    log_index: u32,
    tx_index: u32,
    body: on_chain_event::Body,
) -> OnChainEvent {
    let event_type = match &body {
        on_chain_event::Body::SignerEventBody(_) => OnChainEventType::Signer,
        on_chain_event::Body::SignerMigratedEventBody(_) => OnChainEventType::SignerMigrated,
        on_chain_event::Body::IdRegisterEventBody(_) => OnChainEventType::IdRegister,
        on_chain_event::Body::StorageRentEventBody(_) => OnChainEventType::StorageRent,
        on_chain_event::Body::TierPurchaseEventBody(_) => OnChainEventType::TierPurchase,
        on_chain_event::Body::ChannelRegisterEventBody(_) => OnChainEventType::ChannelRegister,
    };
    let unix = ids::farcaster_to_unix(u64::from(farcaster_time));
    let block_number = optimism_block(unix);
    OnChainEvent {
        r#type: event_type as i32,
        chain_id: OPTIMISM_CHAIN_ID,
        block_number,
        block_hash: derive_bytes(seed, "op-block", u64::from(block_number)).to_vec(),
        block_timestamp: unix,
        transaction_hash: derive_bytes(seed, "op-tx", tx).to_vec(),
        log_index,
        fid,
        body: Some(body),
        tx_index,
        version: 2,
    }
}

fn message_data(
    fid: u64,
    timestamp: u32,
    network: FarcasterNetwork,
    body: message_data::Body,
) -> MessageData {
    let message_type = match &body {
        message_data::Body::CastAddBody(_) => MessageType::CastAdd,
        message_data::Body::CastRemoveBody(_) => MessageType::CastRemove,
        message_data::Body::ReactionBody(_) => MessageType::ReactionAdd,
        message_data::Body::LinkBody(_) => MessageType::LinkAdd,
        message_data::Body::VerificationAddAddressBody(_) => MessageType::VerificationAddEthAddress,
        message_data::Body::VerificationRemoveBody(_) => MessageType::VerificationRemove,
        message_data::Body::UserDataBody(_) => MessageType::UserDataAdd,
        message_data::Body::LinkCompactStateBody(_) => MessageType::LinkCompactState,
        _ => MessageType::None,
    };
    MessageData {
        r#type: message_type as i32,
        fid,
        timestamp,
        network: network as i32,
        body: Some(body),
    }
}

/// A MessageData of the remove type matching `body` (reaction and link removes reuse the body).
fn remove_data(
    fid: u64,
    timestamp: u32,
    network: FarcasterNetwork,
    body: message_data::Body,
) -> MessageData {
    let mut data = message_data(fid, timestamp, network, body);
    data.r#type = match data.r#type {
        t if t == MessageType::ReactionAdd as i32 => MessageType::ReactionRemove as i32,
        t if t == MessageType::LinkAdd as i32 => MessageType::LinkRemove as i32,
        other => other,
    };
    data
}

/// Builds a cast that references no other cast.
pub(crate) fn standalone_cast(
    rng: &mut impl Rng,
    fid: u64,
    timestamp: u32,
    num_fids: u64,
    network: FarcasterNetwork,
) -> MessageData {
    let long = rng.random_bool(0.04);
    let (mut text, mentions, mentions_positions) = cast_text(rng, long, num_fids);
    let mut embeds = Vec::new();
    let roll = rng.random_range(0..100);
    let num_urls = match roll {
        0..=3 => rng.random_range(2..=4),
        4..=33 => 1,
        _ => 0,
    };
    for _ in 0..num_urls {
        embeds.push(Embed {
            embed: Some(embed::Embed::Url(random_url(rng))),
        });
    }
    // A few casts are only an embed.
    let (mut mentions, mut mentions_positions) = (mentions, mentions_positions);
    if !embeds.is_empty() && !long && rng.random_bool(0.08) {
        text.clear();
        mentions.clear();
        mentions_positions.clear();
    }
    let parent = rng
        .random_bool(0.15)
        .then(|| {
            CHANNEL_URLS
                .choose(rng)
                .map(|url| cast_add_body::Parent::ParentUrl((*url).to_string()))
        })
        .flatten();
    message_data(
        fid,
        timestamp,
        network,
        message_data::Body::CastAddBody(CastAddBody {
            embeds_deprecated: Vec::new(),
            mentions,
            parent,
            text,
            mentions_positions,
            embeds,
            r#type: if long {
                CastType::LongCast as i32
            } else {
                CastType::Cast as i32
            },
        }),
    )
}

/// Builds a reply to `parent` or a quote of it.
pub(crate) fn referencing_cast(
    rng: &mut impl Rng,
    fid: u64,
    timestamp: u32,
    num_fids: u64,
    network: FarcasterNetwork,
    target: CastId,
    quote: bool,
) -> MessageData {
    let (text, mentions, mentions_positions) = cast_text(rng, false, num_fids);
    let mut embeds = Vec::new();
    let parent = if quote {
        embeds.push(Embed {
            embed: Some(embed::Embed::CastId(target)),
        });
        if rng.random_bool(0.2) {
            embeds.push(Embed {
                embed: Some(embed::Embed::Url(random_url(rng))),
            });
        }
        None
    } else {
        Some(cast_add_body::Parent::ParentCastId(target))
    };
    message_data(
        fid,
        timestamp,
        network,
        message_data::Body::CastAddBody(CastAddBody {
            embeds_deprecated: Vec::new(),
            mentions,
            parent,
            text,
            mentions_positions,
            embeds,
            r#type: CastType::Cast as i32,
        }),
    )
}

fn reaction_body(rng: &mut impl Rng, target: Option<CastId>) -> ReactionBody {
    let reaction_type = if rng.random_bool(0.8) {
        ReactionType::Like
    } else {
        ReactionType::Recast
    };
    let target = match target {
        Some(cast_id) => reaction_body::Target::TargetCastId(cast_id),
        None => reaction_body::Target::TargetUrl(if rng.random_bool(0.5) {
            CHANNEL_URLS
                .choose(rng)
                .map_or_else(|| random_url(rng), |url| url.to_string())
        } else {
            random_url(rng)
        }),
    };
    ReactionBody {
        r#type: reaction_type as i32,
        target: Some(target),
    }
}

pub(crate) fn follow_body(target_fid: u64) -> LinkBody {
    LinkBody {
        r#type: "follow".to_string(),
        display_timestamp: None,
        target: Some(link_body::Target::TargetFid(target_fid)),
    }
}

fn verification_body(
    rng: &mut impl Rng,
    seed: u64,
    fid: u64,
    index: u64,
) -> VerificationAddAddressBody {
    let solana = rng.random_bool(0.2);
    let derived = derive_bytes(seed, if solana { "sol" } else { "eth" }, fid * 64 + index);
    if solana {
        VerificationAddAddressBody {
            address: derived.to_vec(),
            claim_signature: random_bytes(rng, 64),
            block_hash: random_bytes(rng, 32),
            verification_type: 0,
            chain_id: 0,
            protocol: Protocol::Solana as i32,
        }
    } else {
        VerificationAddAddressBody {
            address: derived[..20].to_vec(),
            claim_signature: random_bytes(rng, 65),
            block_hash: random_bytes(rng, 32),
            verification_type: 0,
            chain_id: 0,
            protocol: Protocol::Ethereum as i32,
        }
    }
}

fn fname_proof(
    seed: u64,
    rng: &mut impl Rng,
    name: &str,
    fid: u64,
    farcaster_time: u32,
) -> UserNameProof {
    UserNameProof {
        timestamp: ids::farcaster_to_unix(u64::from(farcaster_time)),
        name: name.as_bytes().to_vec(),
        owner: custody_address(seed, fid),
        signature: random_bytes(rng, 65),
        fid,
        r#type: UserNameType::Fname as i32,
    }
}

/// First pass for one fid: registration, profile plan, slot kinds and times, standalone casts.
fn plan_fid(options: &DatasetOptions, fid: u64) -> FidPlan {
    let seed = options.seed;
    let num_fids = options.num_fids;
    let mut rng = rng_for(seed, "plan", fid);
    let history_start = HISTORY_END - HISTORY_SPAN;
    // Fids register in order over the first quarter of the history.
    let registration_window = HISTORY_SPAN / 4;
    let registered = history_start
        + ((fid - 1) * u64::from(registration_window) / num_fids.max(1)) as u32
        + rng.random_range(0..600);
    let mut timed = Vec::new();
    let mut seq = 0u32;
    let mut push = |timed: &mut Vec<Timed>, timestamp: u32, fid: u64, item: TimedItem| {
        timed.push(Timed {
            timestamp,
            fid,
            seq,
            item,
        });
        seq += 1;
    };

    // On-chain: register, rent storage and add the signer in one bundler transaction.
    let bundle_time = registered;
    let tx = fid * 16;
    let first_log = rng.random_range(0..8);
    let tx_index = rng.random_range(0..40);
    let custody = custody_address(seed, fid);
    push(
        &mut timed,
        bundle_time,
        fid,
        TimedItem::OnChain(onchain_event(
            seed,
            fid,
            bundle_time,
            tx,
            first_log,
            tx_index,
            on_chain_event::Body::IdRegisterEventBody(IdRegisterEventBody {
                to: custody.clone(),
                event_type: IdRegisterEventType::Register as i32,
                from: Vec::new(),
                recovery_address: derive_bytes(seed, "recovery", fid)[..20].to_vec(),
            }),
        )),
    );
    let unix = ids::farcaster_to_unix(u64::from(bundle_time));
    push(
        &mut timed,
        bundle_time,
        fid,
        TimedItem::OnChain(onchain_event(
            seed,
            fid,
            bundle_time,
            tx,
            first_log + 1,
            tx_index,
            on_chain_event::Body::StorageRentEventBody(StorageRentEventBody {
                payer: custody.clone(),
                units: if rng.random_bool(0.9) {
                    1
                } else {
                    rng.random_range(2..=5)
                },
                expiry: u32::try_from(unix + STORAGE_RENT_SECONDS).unwrap_or(u32::MAX),
            }),
        )),
    );
    let key = sign::fid_signing_key(seed, fid);
    push(
        &mut timed,
        bundle_time,
        fid,
        TimedItem::OnChain(onchain_event(
            seed,
            fid,
            bundle_time,
            tx,
            first_log + 2,
            tx_index,
            on_chain_event::Body::SignerEventBody(SignerEventBody {
                key: key.verifying_key().to_bytes().to_vec(),
                key_type: 1,
                event_type: SignerEventType::Add as i32,
                metadata: random_bytes(&mut rng, 192),
                metadata_type: 1,
            }),
        )),
    );
    // The fname comes right after registration (the USERNAME user data needs it).
    let name_time = registered + 30;
    push(
        &mut timed,
        name_time,
        fid,
        TimedItem::Proof(fname_proof(seed, &mut rng, &fname(fid), fid, name_time)),
    );

    // Message slots between registration and the end of the history.
    let heavy = options
        .heavy_fids
        .iter()
        .find(|(heavy, _)| *heavy == fid)
        .map(|(_, messages)| *messages);
    let target = heavy.unwrap_or(options.messages_per_fid);
    let num_slots = match heavy {
        Some(exactly) => exactly,
        None if target == 0 => 0,
        None => target / 2 + rng.random_range(0..=target),
    };
    let first_message = name_time + 60;
    let mut times: Vec<u32> = (0..num_slots)
        .map(|_| rng.random_range(first_message..=HISTORY_END))
        .collect();
    times.sort_unstable();
    for index in 1..times.len() {
        // A few messages share their predecessor's second (exercises CRDT tie-breaking);
        // the rest strictly increase.
        if rng.random_bool(0.03) {
            times[index] = times[index - 1];
        } else if times[index] <= times[index - 1] {
            times[index] = times[index - 1] + 1;
        }
    }

    let mut profile: Vec<SlotKind> = vec![
        SlotKind::UserData(UserDataType::Username),
        SlotKind::UserData(UserDataType::Display),
        SlotKind::UserData(UserDataType::Bio),
        SlotKind::UserData(UserDataType::Pfp),
    ];
    if rng.random_bool(0.4) {
        profile.push(SlotKind::UserData(UserDataType::Url));
    }
    if rng.random_bool(0.25) {
        profile.push(SlotKind::UserData(UserDataType::Location));
    }
    if rng.random_bool(0.1) {
        profile.push(SlotKind::UserData(UserDataType::Twitter));
    }
    for _ in 0..rng.random_range(0..=2) {
        profile.push(SlotKind::Verification);
    }

    let mut slots = Vec::with_capacity(times.len());
    for (index, timestamp) in times.into_iter().enumerate() {
        let kind = if index < profile.len() {
            profile[index]
        } else {
            // A heavy fid only casts: every slot is a message its store keeps, so its history
            // is exactly as long as asked for.
            let roll = if heavy.is_some() {
                rng.random_range(0..370)
            } else {
                rng.random_range(0..1000)
            };
            match roll {
                0..=239 => SlotKind::Cast(CastPlan::Standalone),
                240..=339 => SlotKind::Cast(CastPlan::Reply),
                340..=369 => SlotKind::Cast(CastPlan::Quote),
                370..=619 => SlotKind::Reaction,
                620..=779 => SlotKind::Follow,
                780..=819 => SlotKind::CastRemove,
                820..=869 => SlotKind::Unlike,
                870..=909 => SlotKind::Unfollow,
                910..=934 => SlotKind::Refollow,
                935..=969 => SlotKind::UserData(
                    *[
                        UserDataType::Bio,
                        UserDataType::Display,
                        UserDataType::Pfp,
                        UserDataType::Location,
                    ]
                    .choose(&mut rng)
                    .unwrap_or(&UserDataType::Bio),
                ),
                970..=984 => SlotKind::Verification,
                _ => SlotKind::VerificationRemove,
            }
        };
        slots.push(Slot { timestamp, kind });
    }

    let mut standalone = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        if slot.kind == SlotKind::Cast(CastPlan::Standalone) {
            let data = standalone_cast(&mut rng, fid, slot.timestamp, num_fids, options.network);
            standalone.push((index, Unsigned::new(data)));
        }
    }

    // A few fnames move to another fid; the old owner then registers a new name.
    if num_fids > 1 && rng.random_bool(0.01) {
        let transfer_time = rng.random_range(name_time + 3600..=HISTORY_END);
        let mut to = rng.random_range(1..=num_fids);
        if to == fid {
            to = to % num_fids + 1;
        }
        push(
            &mut timed,
            transfer_time,
            fid,
            TimedItem::Proof(fname_proof(seed, &mut rng, &fname(fid), to, transfer_time)),
        );
        let new_name = format!("{}x", fname(fid));
        push(
            &mut timed,
            transfer_time + 10,
            fid,
            TimedItem::Proof(fname_proof(
                seed,
                &mut rng,
                &new_name,
                fid,
                transfer_time + 10,
            )),
        );
    }
    // Some custody owners change their recovery address; some fids buy more storage.
    if rng.random_bool(0.05) {
        let when = rng.random_range(name_time..=HISTORY_END);
        push(
            &mut timed,
            when,
            fid,
            TimedItem::OnChain(onchain_event(
                seed,
                fid,
                when,
                fid * 16 + 1,
                rng.random_range(0..8),
                rng.random_range(0..40),
                on_chain_event::Body::IdRegisterEventBody(IdRegisterEventBody {
                    to: custody.clone(),
                    event_type: IdRegisterEventType::ChangeRecovery as i32,
                    from: Vec::new(),
                    recovery_address: random_bytes(&mut rng, 20),
                }),
            )),
        );
    }
    if rng.random_bool(0.1) {
        let when = rng.random_range(name_time..=HISTORY_END);
        let unix = ids::farcaster_to_unix(u64::from(when));
        push(
            &mut timed,
            when,
            fid,
            TimedItem::OnChain(onchain_event(
                seed,
                fid,
                when,
                fid * 16 + 2,
                rng.random_range(0..8),
                rng.random_range(0..40),
                on_chain_event::Body::StorageRentEventBody(StorageRentEventBody {
                    payer: random_bytes(&mut rng, 20),
                    units: 1,
                    expiry: u32::try_from(unix + STORAGE_RENT_SECONDS).unwrap_or(u32::MAX),
                }),
            )),
        );
    }

    FidPlan {
        fid,
        slots,
        standalone,
        timed,
    }
}

/// Second pass for one fid: every remaining message, in slot order (signed by the caller).
fn fill_fid(options: &DatasetOptions, plan: FidPlan, targets: &[CastTarget]) -> Vec<Timed> {
    let FidPlan {
        fid,
        slots,
        standalone,
        mut timed,
    } = plan;
    let seed = options.seed;
    let num_fids = options.num_fids;
    let network = options.network;
    let mut rng = rng_for(seed, "fill", fid);
    let mut standalone = standalone.into_iter().peekable();

    // What the fid believes it currently has, to aim removes at.
    let mut own_casts: Vec<sign::Hash> = Vec::new();
    let mut reactions: Vec<ReactionBody> = Vec::new();
    let mut follows: Vec<u64> = Vec::new();
    let mut unfollowed: Vec<u64> = Vec::new();
    let mut verifications: Vec<(Vec<u8>, i32)> = Vec::new();
    let mut num_verifications = 0u64;
    let mut seq = 1000u32;

    let pick_target = |rng: &mut StdRng, timestamp: u32| -> Option<CastId> {
        let available = targets.partition_point(|target| target.timestamp < timestamp);
        if available == 0 {
            return None;
        }
        // Prefer recent casts, as people reply to what is in their feed.
        let low = available.saturating_sub(2000);
        let target = targets[rng.random_range(low..available)];
        Some(CastId {
            fid: target.fid,
            hash: target.hash.to_vec(),
        })
    };

    for (index, slot) in slots.iter().enumerate() {
        let timestamp = slot.timestamp;
        let mut kind = slot.kind;
        // Removes need something to remove; fall back to a plain cast.
        let fallback = SlotKind::Cast(CastPlan::Reply);
        kind = match kind {
            SlotKind::CastRemove if own_casts.is_empty() => fallback,
            SlotKind::Unlike if reactions.is_empty() => fallback,
            SlotKind::Unfollow if follows.is_empty() => fallback,
            SlotKind::Refollow if unfollowed.is_empty() => SlotKind::Follow,
            SlotKind::VerificationRemove if verifications.is_empty() => SlotKind::Verification,
            other => other,
        };
        let unsigned = match kind {
            SlotKind::Cast(CastPlan::Standalone) => {
                match standalone.next_if(|(i, _)| *i == index) {
                    Some((_, unsigned)) => unsigned,
                    None => continue,
                }
            }
            SlotKind::Cast(plan) => match pick_target(&mut rng, timestamp) {
                Some(target) => Unsigned::new(referencing_cast(
                    &mut rng,
                    fid,
                    timestamp,
                    num_fids,
                    network,
                    target,
                    plan == CastPlan::Quote,
                )),
                None => Unsigned::new(standalone_cast(&mut rng, fid, timestamp, num_fids, network)),
            },
            SlotKind::UserData(user_data_type) => Unsigned::new(message_data(
                fid,
                timestamp,
                network,
                message_data::Body::UserDataBody(UserDataBody {
                    r#type: user_data_type as i32,
                    value: user_data_value(&mut rng, fid, user_data_type),
                }),
            )),
            SlotKind::Verification => {
                let body = verification_body(&mut rng, seed, fid, num_verifications);
                num_verifications += 1;
                verifications.push((body.address.clone(), body.protocol));
                Unsigned::new(message_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::VerificationAddAddressBody(body),
                ))
            }
            SlotKind::VerificationRemove => {
                let index = rng.random_range(0..verifications.len());
                let (address, protocol) = verifications.swap_remove(index);
                Unsigned::new(message_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::VerificationRemoveBody(VerificationRemoveBody {
                        address,
                        protocol,
                    }),
                ))
            }
            SlotKind::Reaction => {
                let target = if rng.random_bool(0.9) {
                    pick_target(&mut rng, timestamp)
                } else {
                    None
                };
                let body = reaction_body(&mut rng, target);
                if reactions.contains(&body) {
                    continue;
                }
                reactions.push(body.clone());
                Unsigned::new(message_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::ReactionBody(body),
                ))
            }
            SlotKind::Unlike => {
                let index = rng.random_range(0..reactions.len());
                let body = reactions.swap_remove(index);
                Unsigned::new(remove_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::ReactionBody(body),
                ))
            }
            SlotKind::Follow | SlotKind::Refollow => {
                let target = if kind == SlotKind::Refollow {
                    let index = rng.random_range(0..unfollowed.len());
                    unfollowed.swap_remove(index)
                } else {
                    if num_fids < 2 {
                        continue;
                    }
                    let mut target = rng.random_range(1..=num_fids);
                    if target == fid {
                        target = target % num_fids + 1;
                    }
                    target
                };
                if follows.contains(&target) {
                    continue;
                }
                follows.push(target);
                Unsigned::new(message_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::LinkBody(follow_body(target)),
                ))
            }
            SlotKind::Unfollow => {
                let index = rng.random_range(0..follows.len());
                let target = follows.swap_remove(index);
                unfollowed.push(target);
                Unsigned::new(remove_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::LinkBody(follow_body(target)),
                ))
            }
            SlotKind::CastRemove => {
                let index = rng.random_range(0..own_casts.len());
                let target = own_casts.swap_remove(index);
                Unsigned::new(message_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::CastRemoveBody(CastRemoveBody {
                        target_hash: target.to_vec(),
                    }),
                ))
            }
        };
        if unsigned.data.r#type == MessageType::CastAdd as i32 {
            own_casts.push(unsigned.hash);
        }
        timed.push(Timed {
            timestamp,
            fid,
            seq,
            item: TimedItem::Message(unsigned),
        });
        seq += 1;
    }
    timed
}

/// Runs `work` over `inputs` on all cores, keeping the input order in the output.
fn parallel_map<T: Send, R: Send>(inputs: Vec<T>, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, inputs.len().max(1));
    if threads == 1 {
        return inputs.into_iter().map(work).collect();
    }
    let chunk_size = inputs.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut inputs = inputs.into_iter().peekable();
    while inputs.peek().is_some() {
        chunks.push(inputs.by_ref().take(chunk_size).collect());
    }
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(work).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| match handle.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Builds the whole history.
pub(crate) fn build(options: &DatasetOptions) -> Dataset {
    let fids: Vec<u64> = (1..=options.num_fids).collect();
    let keys: Vec<SigningKey> =
        parallel_map(fids.clone(), |fid| sign::fid_signing_key(options.seed, fid));

    let plans = parallel_map(fids, |fid| plan_fid(options, fid));
    let mut targets: Vec<CastTarget> = plans
        .iter()
        .flat_map(|plan| {
            plan.standalone.iter().map(move |(_, unsigned)| CastTarget {
                timestamp: unsigned.data.timestamp,
                fid: plan.fid,
                hash: unsigned.hash,
            })
        })
        .collect();
    targets.sort_by_key(|target| (target.timestamp, target.fid, target.hash));

    let keys_ref = &keys;
    let targets_ref = &targets;
    let unsigned: Vec<Timed> = parallel_map(plans, |plan| fill_fid(options, plan, targets_ref))
        .into_iter()
        .flatten()
        .collect();
    // Signed item by item rather than fid by fid, so a fid with a very large history is
    // signed on every core too.
    let per_fid: Vec<Vec<(Timed, Option<Arc<Message>>)>> =
        vec![parallel_map(unsigned, |mut timed| {
            let key = &keys_ref[(timed.fid - 1) as usize];
            let signed = match std::mem::replace(
                &mut timed.item,
                TimedItem::Proof(UserNameProof::default()),
            ) {
                TimedItem::Message(unsigned) => Some(Arc::new(unsigned.sign(key))),
                other => {
                    timed.item = other;
                    None
                }
            };
            (timed, signed)
        })];

    let mut fid_last_timestamp = vec![0u32; options.num_fids as usize];
    let mut num_messages = 0;
    let mut all: Vec<(u32, u64, u32, Item)> = Vec::new();
    for (timed, signed) in per_fid.into_iter().flatten() {
        let item = match (timed.item, signed) {
            (_, Some(message)) => {
                num_messages += 1;
                if let Some(last) = fid_last_timestamp.get_mut((timed.fid - 1) as usize) {
                    *last = (*last).max(timed.timestamp);
                }
                Item::Message(message)
            }
            (TimedItem::OnChain(event), None) => Item::OnChain(event),
            (TimedItem::Proof(proof), None) => Item::Proof(proof),
            (TimedItem::Message(_), None) => continue,
        };
        all.push((timed.timestamp, timed.fid, timed.seq, item));
    }
    all.sort_by_key(|(timestamp, fid, seq, _)| (*timestamp, *fid, *seq));

    let cast_targets = targets
        .iter()
        .rev()
        .take(5000)
        .map(|target| CastId {
            fid: target.fid,
            hash: target.hash.to_vec(),
        })
        .collect();
    Dataset {
        items: all.into_iter().map(|(_, _, _, item)| item).collect(),
        keys: Arc::new(keys),
        cast_targets,
        fid_last_timestamp,
        num_messages,
    }
}

/// Continues the history with live messages, one at a time, deterministically for a seed and
/// a sequence of calls.
pub(crate) struct LiveGenerator {
    pub rng: StdRng,
    num_fids: u64,
    network: FarcasterNetwork,
    keys: Arc<Vec<SigningKey>>,
    cast_targets: Vec<CastId>,
    fid_last_timestamp: Vec<u32>,
    /// Farcaster seconds of the current live round; advances one second per committed round
    /// (and keeps up with the wall clock when `wall_clock`).
    clock: u32,
    wall_clock: bool,
}

fn wall_clock_now() -> u32 {
    u32::try_from(ids::farcaster_now()).unwrap_or(u32::MAX)
}

impl LiveGenerator {
    pub(crate) fn new(options: &DatasetOptions, dataset: &Dataset) -> LiveGenerator {
        let clock = dataset
            .fid_last_timestamp
            .iter()
            .copied()
            .max()
            .unwrap_or(HISTORY_END)
            .max(HISTORY_END)
            + 1;
        let clock = if options.wall_clock {
            clock.max(wall_clock_now())
        } else {
            clock
        };
        LiveGenerator {
            rng: rng_for(options.seed, "live", 0),
            num_fids: options.num_fids,
            network: options.network,
            keys: dataset.keys.clone(),
            cast_targets: dataset.cast_targets.clone(),
            fid_last_timestamp: dataset.fid_last_timestamp.clone(),
            clock,
            wall_clock: options.wall_clock,
        }
    }

    /// Moves the clock on after a committed round.
    pub(crate) fn tick(&mut self) {
        self.clock += 1;
        if self.wall_clock {
            self.clock = self.clock.max(wall_clock_now());
        }
    }

    /// A random fid.
    pub(crate) fn random_fid(&mut self) -> u64 {
        self.rng.random_range(1..=self.num_fids.max(1))
    }

    /// The key of a fid.
    pub(crate) fn key(&self, fid: u64) -> Option<&SigningKey> {
        self.keys.get(usize::try_from(fid.checked_sub(1)?).ok()?)
    }

    /// The next timestamp of a fid: the round's clock, strictly after its previous message.
    pub(crate) fn timestamp_for(&mut self, fid: u64) -> u32 {
        let index = (fid - 1) as usize;
        let last = self.fid_last_timestamp.get(index).copied().unwrap_or(0);
        let timestamp = self.clock.max(last + 1);
        if let Some(slot) = self.fid_last_timestamp.get_mut(index) {
            *slot = timestamp;
        }
        timestamp
    }

    /// Signs `data` with its fid's key.
    pub(crate) fn sign(&self, data: MessageData) -> Option<Message> {
        let key = self.key(data.fid)?;
        Some(sign::sign(data, key))
    }

    /// The next live message of `fid` (whose shard store is `store`): mostly casts, reactions and follows, with removes and profile
    /// updates, aimed at what the store currently holds. None when the hub has no fids.
    pub(crate) fn next_message(&mut self, fid: u64, store: &Store) -> Option<Message> {
        if self.num_fids == 0 {
            return None;
        }
        let mut roll = self.rng.random_range(0..100);
        if self.num_fids < 2 && (55..=69).contains(&roll) {
            // Nobody else to follow.
            roll = 0;
        }
        let network = self.network;
        let data = match roll {
            0..=29 => {
                let timestamp = self.timestamp_for(fid);
                let reply_to = if self.rng.random_bool(0.3) {
                    self.cast_targets.choose(&mut self.rng).cloned()
                } else {
                    None
                };
                match reply_to {
                    Some(target) => referencing_cast(
                        &mut self.rng,
                        fid,
                        timestamp,
                        self.num_fids,
                        network,
                        target,
                        false,
                    ),
                    None => standalone_cast(&mut self.rng, fid, timestamp, self.num_fids, network),
                }
            }
            30..=54 => {
                let target = self.cast_targets.choose(&mut self.rng).cloned();
                let body = reaction_body(&mut self.rng, target);
                let timestamp = self.timestamp_for(fid);
                message_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::ReactionBody(body),
                )
            }
            55..=69 => {
                let mut target = self.random_fid();
                if target == fid {
                    target = target % self.num_fids + 1;
                }
                let timestamp = self.timestamp_for(fid);
                message_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::LinkBody(follow_body(target)),
                )
            }
            70..=77 => {
                let user_data_type = *[UserDataType::Bio, UserDataType::Display, UserDataType::Pfp]
                    .choose(&mut self.rng)
                    .unwrap_or(&UserDataType::Bio);
                let value = user_data_value(&mut self.rng, fid, user_data_type);
                let timestamp = self.timestamp_for(fid);
                message_data(
                    fid,
                    timestamp,
                    network,
                    message_data::Body::UserDataBody(UserDataBody {
                        r#type: user_data_type as i32,
                        value,
                    }),
                )
            }
            _ => return self.remove_something(store, fid),
        };
        let message = self.sign(data)?;
        if message
            .data
            .as_ref()
            .is_some_and(|d| d.r#type == MessageType::CastAdd as i32)
        {
            self.cast_targets.push(CastId {
                fid,
                hash: message.hash.clone(),
            });
        }
        Some(message)
    }

    /// A remove of one of the fid's current casts, reactions or follows; a new cast when it
    /// has none.
    fn remove_something(&mut self, store: &Store, fid: u64) -> Option<Message> {
        let set = *[Set::Casts, Set::Reactions, Set::Links].choose(&mut self.rng)?;
        let adds: Vec<Arc<Message>> = store
            .fid_messages(fid, set)
            .into_iter()
            .filter(|message| {
                message.data.as_ref().is_some_and(|data| {
                    [
                        MessageType::CastAdd as i32,
                        MessageType::ReactionAdd as i32,
                        MessageType::LinkAdd as i32,
                    ]
                    .contains(&data.r#type)
                })
            })
            .collect();
        let network = self.network;
        let Some(add) = adds.choose(&mut self.rng).cloned() else {
            let timestamp = self.timestamp_for(fid);
            let data = standalone_cast(&mut self.rng, fid, timestamp, self.num_fids, network);
            return self.sign(data);
        };
        let body = add.data.as_ref()?.body.clone()?;
        let timestamp = self.timestamp_for(fid);
        let data = match body {
            message_data::Body::CastAddBody(_) => message_data(
                fid,
                timestamp,
                network,
                message_data::Body::CastRemoveBody(CastRemoveBody {
                    target_hash: add.hash.clone(),
                }),
            ),
            body => remove_data(fid, timestamp, network, body),
        };
        self.sign(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(num_fids: u64, messages_per_fid: u32) -> DatasetOptions {
        DatasetOptions {
            seed: 7,
            num_fids,
            num_shards: 2,
            messages_per_fid,
            network: FarcasterNetwork::Mainnet,
            wall_clock: false,
            heavy_fids: Vec::new(),
        }
    }

    #[test]
    fn cast_text_respects_the_limits() {
        let mut rng = rng_for(1, "test", 0);
        for _ in 0..2000 {
            let long = rng.random_bool(0.2);
            let (text, mentions, positions) = cast_text(&mut rng, long, 50);
            if long {
                assert!((321..=1024).contains(&text.len()), "{}", text.len());
            } else {
                assert!(text.len() <= 320);
            }
            assert_eq!(mentions.len(), positions.len());
            assert!(mentions.len() <= 10);
            assert!(positions.windows(2).all(|pair| pair[0] <= pair[1]));
            assert!(positions.iter().all(|p| *p as usize <= text.len()));
        }
    }

    #[test]
    fn build_is_deterministic_and_ordered() {
        let a = build(&options(20, 30));
        let b = build(&options(20, 30));
        assert_eq!(a.items.len(), b.items.len());
        assert!(a.num_messages > 20 * 10);
        let hashes = |dataset: &Dataset| -> Vec<Vec<u8>> {
            dataset
                .items
                .iter()
                .filter_map(|item| match item {
                    Item::Message(message) => Some(message.hash.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(hashes(&a), hashes(&b));
        let timestamps: Vec<u64> = a
            .items
            .iter()
            .map(|item| match item {
                Item::Message(message) => u64::from(message.data.as_ref().unwrap().timestamp),
                Item::OnChain(event) => ids::unix_to_farcaster(event.block_timestamp),
                Item::Proof(proof) => ids::unix_to_farcaster(proof.timestamp),
            })
            .collect();
        assert!(timestamps.windows(2).all(|pair| pair[0] <= pair[1]));
    }
}
