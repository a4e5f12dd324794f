//! What the query layer answers: the items and pages both sources (hub and PostgreSQL) produce,
//! in one shape, so a REST body or an MCP result does not depend on who answered.
//!
//! Conventions (the same as `replica.rs` and the existing Waypoint's MCP answers): hashes and
//! other bytes are bare lowercase hex; Ethereum addresses and owners are `0x`-prefixed
//! lowercase hex, Solana addresses base58; message timestamps are Farcaster seconds, on-chain
//! and username-proof timestamps Unix seconds, as on the wire.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which source answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Hub,
    Database,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Hub => "hub",
            Source::Database => "database",
        }
    }
}

/// An answer and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub value: T,
    pub source: Source,
}

/// One page of a list, newest first unless the query says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of a list query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page, already checked against [`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// The `next_cursor` of the previous page, decoded ([`super::cursor::Cursor::decode`]).
    pub cursor: Option<super::cursor::Cursor>,
}

/// Largest page any list returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Page size when none is asked for (the MCP tools' documented default).
pub const DEFAULT_PAGE_SIZE: u32 = 10;

/// A time window over message timestamps, Unix seconds, inclusive at both ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    pub start: Option<u64>,
    pub end: Option<u64>,
}

/// Where a cast points: another cast or a URL (a channel, a web page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CastTarget {
    Cast { fid: u64, hash: String },
    Url { url: String },
}

/// A cast embed: a URL or a quoted cast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Embed {
    Url { url: String },
    Cast { fid: u64, hash: String },
}

/// A live cast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cast {
    pub hash: String,
    pub fid: u64,
    /// Farcaster seconds.
    pub timestamp: u64,
    pub text: String,
    /// What the cast replies to, if anything.
    pub parent: Option<CastTarget>,
    pub embeds: Vec<Embed>,
    pub mentions: Vec<u64>,
    /// Byte offsets of the mentions in `text`.
    pub mentions_positions: Vec<u32>,
}

/// 1 like, 2 recast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReactionType {
    Like,
    Recast,
}

impl ReactionType {
    pub fn id(self) -> i32 {
        match self {
            ReactionType::Like => 1,
            ReactionType::Recast => 2,
        }
    }

    pub fn from_id(id: i32) -> Option<ReactionType> {
        match id {
            1 => Some(ReactionType::Like),
            2 => Some(ReactionType::Recast),
            _ => None,
        }
    }
}

/// A live reaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reaction {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    pub reaction_type: ReactionType,
    pub target: CastTarget,
}

/// A live link (a follow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Link {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    pub link_type: String,
    pub target_fid: u64,
    /// Farcaster seconds, as on the wire (like `timestamp`).
    pub display_timestamp: Option<u64>,
}

/// A fid's link compact state: the complete set of its links of one type at `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkCompactState {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    pub link_type: String,
    pub target_fids: Vec<u64>,
}

/// A live verified address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    /// `0x…` for Ethereum, base58 for Solana.
    pub address: String,
    /// `ethereum` or `solana`.
    pub protocol: String,
    pub block_hash: String,
    /// 0 for an EOA, 1 for a contract verification.
    pub verification_type: u32,
    pub chain_id: u32,
}

/// One user data value (one per fid and type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserDataValue {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    /// The protocol's UserDataType number.
    pub data_type: i32,
    /// Its name: `pfp`, `display`, `bio`, `url`, `username`, `location`, `twitter`, `github`,
    /// `banner`, `primary_address_ethereum`, `primary_address_solana`, `profile_token`.
    pub data_type_name: String,
    pub value: String,
}

/// A username proof (fname, ENS name or basename).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsernameProof {
    pub name: String,
    pub fid: u64,
    /// Unix seconds.
    pub timestamp: u64,
    /// `fname`, `ens_l1` or `basename`.
    pub proof_type: String,
    /// `0x…`.
    pub owner: String,
    pub signature: String,
}

/// A profile: the fid's user data, its username proofs, and (from PostgreSQL, when it can be
/// reached, whichever source answered the rest) its follower and following counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub fid: u64,
    pub username: Option<String>,
    pub display_name: Option<String>,
    pub pfp: Option<String>,
    pub bio: Option<String>,
    pub url: Option<String>,
    pub location: Option<String>,
    pub twitter: Option<String>,
    pub github: Option<String>,
    pub banner: Option<String>,
    pub primary_address_ethereum: Option<String>,
    pub primary_address_solana: Option<String>,
    /// Every user data value, by type number.
    pub user_data: Vec<UserDataValue>,
    pub username_proofs: Vec<UsernameProof>,
    pub follower_count: Option<u64>,
    pub following_count: Option<u64>,
}

/// An on-chain event (ID registry, signer, storage rent, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OnChainEvent {
    pub fid: u64,
    /// The protocol's OnChainEventType number.
    pub event_type: i32,
    /// `signer`, `signer_migrated`, `id_register`, `storage_rent`, `tier_purchase`.
    pub event_type_name: String,
    pub chain_id: u32,
    pub block_number: u32,
    pub block_hash: String,
    /// Unix seconds.
    pub block_timestamp: u64,
    pub transaction_hash: String,
    pub log_index: u32,
    pub tx_index: u32,
    /// The event's body, by type (the same fields as the database's `body` column).
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// How far a conversation is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationRequest {
    /// Read replies of replies, up to `max_depth` levels.
    pub recursive: bool,
    /// Levels of replies read (1: direct replies only).
    pub max_depth: u32,
    /// Replies read per cast.
    pub limit: u32,
}

/// A reply, the casts it quotes and, when read recursively, its own replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reply {
    pub cast: Cast,
    pub quoted_casts: Vec<Cast>,
    #[schema(no_recursion)]
    pub replies: Vec<Reply>,
    /// Its replies were read (recursive and within the depth) — `replies` is then complete
    /// up to `has_more_replies`.
    pub replies_read: bool,
    /// It has more replies than were read (`limit` reached).
    pub has_more_replies: bool,
}

/// A cast in its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Conversation {
    /// The cast asked for.
    pub cast: Cast,
    /// Its ancestors, nearest parent first, as far as they can be found (at most
    /// [`CONVERSATION_MAX_ANCESTORS`]).
    pub parent_casts: Vec<Cast>,
    /// Casts it quotes (cast embeds) that can be found.
    pub quoted_casts: Vec<Cast>,
    /// Replies, newest first.
    pub replies: Vec<Reply>,
    /// More direct replies exist than were read.
    pub has_more_replies: bool,
    /// Every author that appears (the cast, ancestors, quoted casts, replies), ascending.
    pub participant_fids: Vec<u64>,
    /// The profiles of the participants that have one, by fid ascending.
    pub participants: Vec<Profile>,
    /// The cast's first five words and `...` (`Untitled conversation` without text).
    pub topic: String,
    /// Who started it, how it begins (50 characters), and how many replies were read.
    pub summary: String,
}

/// Ancestors a conversation follows up the reply chain.
pub const CONVERSATION_MAX_ANCESTORS: usize = 5;
/// Deepest reply level a conversation reads, whatever is asked.
pub const CONVERSATION_MAX_DEPTH: u32 = 10;
/// Most casts one conversation reads (replies at every level together): a recursive read of
/// a popular thread must not turn into thousands of calls.
pub const CONVERSATION_MAX_CASTS: usize = 500;

/// Cuts `text` to at most `max_chars` characters, adding `...` when it was longer; never
/// splits a character (multi-byte UTF-8 text is about 4% of casts).
pub fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// The name of a UserDataType number (see [`UserDataValue::data_type_name`]); `unknown` for a
/// type this build does not know.
pub fn user_data_type_name(data_type: i32) -> &'static str {
    match data_type {
        1 => "pfp",
        2 => "display",
        3 => "bio",
        5 => "url",
        6 => "username",
        7 => "location",
        8 => "twitter",
        9 => "github",
        10 => "banner",
        11 => "primary_address_ethereum",
        12 => "primary_address_solana",
        13 => "profile_token",
        14 => "live_at",
        _ => "unknown",
    }
}

/// The name of an OnChainEventType number (see [`OnChainEvent::event_type_name`]).
pub fn onchain_event_type_name(event_type: i32) -> &'static str {
    match event_type {
        1 => "signer",
        2 => "signer_migrated",
        3 => "id_register",
        4 => "storage_rent",
        5 => "tier_purchase",
        6 => "channel_register",
        _ => "unknown",
    }
}

/// The name of a username proof type (see [`UsernameProof::proof_type`]).
pub fn username_proof_type_name(proof_type: i32) -> &'static str {
    match proof_type {
        1 => "fname",
        2 => "ens_l1",
        3 => "basename",
        _ => "unknown",
    }
}

/// The name of a verification protocol (see [`Verification::protocol`]).
pub fn verification_protocol_name(protocol: i32) -> &'static str {
    match protocol {
        1 => "solana",
        _ => "ethereum",
    }
}

/// A verified address as users write it: `0x`-prefixed lowercase hex for Ethereum (protocol
/// 0), base58 for Solana (protocol 1).
pub fn verification_address(protocol: i32, address: &[u8]) -> String {
    match protocol {
        1 => base58_encode(address),
        _ => format!("0x{}", hex::encode(address)),
    }
}

/// The bytes of an address written as [`verification_address`] writes it (`0x` hex in any
/// case, or base58); `None` when it is neither.
pub fn parse_verification_address(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(digits) => hex::decode(digits).ok(),
        None => base58_decode(text),
    }
}

/// The Bitcoin base58 alphabet, which Solana addresses use.
const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// Longest base58 text decoded: far above a 32-byte key (44 characters), and it keeps the
/// quadratic decoding of hostile input cheap.
const BASE58_MAX_LEN: usize = 128;

fn base58_encode(bytes: &[u8]) -> String {
    let zeros = bytes.iter().take_while(|byte| **byte == 0).count();
    // Little-endian base-58 digits of the number the bytes spell.
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 138 / 100 + 1);
    for byte in &bytes[zeros..] {
        let mut carry = u32::from(*byte);
        for digit in digits.iter_mut() {
            carry += u32::from(*digit) << 8;
            *digit = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut text = String::with_capacity(zeros + digits.len());
    text.extend(std::iter::repeat_n('1', zeros));
    text.extend(
        digits
            .iter()
            .rev()
            .map(|digit| char::from(BASE58_ALPHABET[usize::from(*digit)])),
    );
    text
}

fn base58_decode(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() > BASE58_MAX_LEN {
        return None;
    }
    let zeros = text.bytes().take_while(|byte| *byte == b'1').count();
    // Little-endian base-256 bytes of the number the digits spell.
    let mut bytes: Vec<u8> = Vec::with_capacity(text.len());
    for character in text.bytes().skip(zeros) {
        let mut carry = BASE58_ALPHABET
            .iter()
            .position(|known| *known == character)? as u32;
        for byte in bytes.iter_mut() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut decoded = vec![0u8; zeros];
    decoded.extend(bytes.iter().rev());
    Some(decoded)
}

impl Profile {
    /// A profile from a fid's live user data values and username proofs (any order);
    /// `None` when it has neither. The follow counts are left out (see [`Profile`]).
    pub fn from_parts(
        fid: u64,
        mut user_data: Vec<UserDataValue>,
        mut username_proofs: Vec<UsernameProof>,
    ) -> Option<Profile> {
        if user_data.is_empty() && username_proofs.is_empty() {
            return None;
        }
        user_data.sort_by(|a, b| a.data_type.cmp(&b.data_type).then(a.hash.cmp(&b.hash)));
        username_proofs.sort_by(|a, b| a.name.cmp(&b.name));
        let value = |data_type: i32| {
            user_data
                .iter()
                .find(|value| value.data_type == data_type)
                .map(|value| value.value.clone())
        };
        Some(Profile {
            fid,
            username: value(6),
            display_name: value(2),
            pfp: value(1),
            bio: value(3),
            url: value(5),
            location: value(7),
            twitter: value(8),
            github: value(9),
            banner: value(10),
            primary_address_ethereum: value(11),
            primary_address_solana: value(12),
            user_data,
            username_proofs,
            follower_count: None,
            following_count: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_chars("hello", 10), "hello");
        assert_eq!(truncate_chars("hello world", 5), "hello...");
        assert_eq!(truncate_chars("héllo wörld", 4), "héll...");
        assert_eq!(truncate_chars("🦀🦀🦀", 2), "🦀🦀...");
        assert_eq!(truncate_chars("日本語のテキスト", 3), "日本語...");
    }

    #[test]
    fn addresses_round_trip_by_protocol() {
        let ethereum = [0xABu8; 20];
        let text = verification_address(0, &ethereum);
        assert_eq!(text, format!("0x{}", "ab".repeat(20)));
        assert_eq!(
            parse_verification_address(&text.to_uppercase().replace("0X", "0x")),
            Some(ethereum.to_vec())
        );
        // The System Program's address: 32 zero bytes.
        assert_eq!(verification_address(1, &[0; 32]), "1".repeat(32));
        let key: Vec<u8> = (0u8..32).collect();
        let text = verification_address(1, &key);
        assert_eq!(parse_verification_address(&text), Some(key));
        assert_eq!(base58_encode(b"hello world"), "StV1DL6CwTryKyV");
        for bad in ["", "0xzz", "0OIl", "🦀", &"2".repeat(500)] {
            assert_eq!(parse_verification_address(bad), None, "{bad}");
        }
    }
}
