//! The canonical content of a replica: what a correct Waypoint database must hold for a given
//! hub history, table by table, in a form that can be compared and written as JSON.
//!
//! [`ReplicaState::live_only`] is the part a backfill into an empty database can know.
//!
//! Two independent sides produce it: the dev hub (`waypoint devhub --dump-state`) from its own
//! in-memory store, and `store::state::read_replica` from PostgreSQL. Tests compare the two.
//! Rows are sorted by their key so equal replicas serialise identically.
//!
//! What "removed rows" means here: the database keeps every add message it has seen, and a row
//! is live when the hub still holds that message (`live = false` once it was removed, superseded,
//! pruned or revoked). `user_data` keeps one row per (fid, type) and `username_proofs` one row per
//! name: the newest message ever merged for that key, live unless it was pruned, revoked or
//! deleted.
//!
//! Hashes, addresses and other bytes are lowercase hex without `0x`; timestamps are Farcaster
//! seconds for messages and Unix seconds for on-chain events and username proofs (as on the wire).

use serde::{Deserialize, Serialize};

/// Every table of a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    pub casts: Vec<CastRow>,
    pub reactions: Vec<ReactionRow>,
    pub links: Vec<LinkRow>,
    pub verifications: Vec<VerificationRow>,
    pub user_data: Vec<UserDataRow>,
    pub username_proofs: Vec<UsernameProofRow>,
    pub onchain_events: Vec<OnchainEventRow>,
}

/// An embed of a cast: a URL or another cast.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedRow {
    Url(String),
    Cast { fid: u64, hash: String },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CastRow {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    /// The cast text with NUL characters replaced (see [`sanitize_text`]).
    pub text: String,
    pub parent_fid: Option<u64>,
    pub parent_hash: Option<String>,
    pub parent_url: Option<String>,
    pub embeds: Vec<EmbedRow>,
    pub mentions: Vec<u64>,
    pub mentions_positions: Vec<u32>,
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReactionRow {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    /// 1 like, 2 recast.
    pub reaction_type: i32,
    pub target_cast_fid: Option<u64>,
    pub target_cast_hash: Option<String>,
    pub target_url: Option<String>,
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkRow {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    pub link_type: String,
    pub target_fid: u64,
    pub display_timestamp: Option<u64>,
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VerificationRow {
    pub hash: String,
    pub fid: u64,
    pub timestamp: u64,
    /// The verified address (20 bytes for Ethereum, 32 for Solana), hex.
    pub address: String,
    /// 0 Ethereum, 1 Solana.
    pub protocol: i32,
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserDataRow {
    pub fid: u64,
    /// UserDataType number.
    pub user_data_type: i32,
    pub hash: String,
    pub timestamp: u64,
    pub value: String,
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsernameProofRow {
    /// The name as text (lossy UTF-8 of the proof's bytes).
    pub name: String,
    pub fid: u64,
    /// 1 fname, 2 ENS L1, 3 basename.
    pub proof_type: i32,
    /// Owner address, hex.
    pub owner: String,
    /// Unix seconds, as issued.
    pub timestamp: u64,
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OnchainEventRow {
    pub chain_id: u32,
    pub tx_hash: String,
    pub log_index: u32,
    pub fid: u64,
    /// OnChainEventType number.
    pub event_type: i32,
    pub block_number: u32,
    /// Unix seconds.
    pub block_timestamp: u64,
}

impl ReplicaState {
    /// Sorts every table by its key, so that equal replicas compare and serialise equal.
    pub fn sort(&mut self) {
        self.casts.sort_by(|a, b| a.hash.cmp(&b.hash));
        self.reactions.sort_by(|a, b| a.hash.cmp(&b.hash));
        self.links.sort_by(|a, b| a.hash.cmp(&b.hash));
        self.verifications.sort_by(|a, b| a.hash.cmp(&b.hash));
        self.user_data
            .sort_by_key(|row| (row.fid, row.user_data_type));
        self.username_proofs.sort_by(|a, b| a.name.cmp(&b.name));
        self.onchain_events.sort_by(|a, b| {
            (a.chain_id, &a.tx_hash, a.log_index).cmp(&(b.chain_id, &b.tx_hash, b.log_index))
        });
    }

    /// Lists, table by table, the rows that differ between `self` (expected) and `actual`,
    /// at most `limit` per table. Empty when the replicas are equal.
    pub fn diff(&self, actual: &ReplicaState, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        diff_table("casts", &self.casts, &actual.casts, limit, &mut out);
        diff_table(
            "reactions",
            &self.reactions,
            &actual.reactions,
            limit,
            &mut out,
        );
        diff_table("links", &self.links, &actual.links, limit, &mut out);
        diff_table(
            "verifications",
            &self.verifications,
            &actual.verifications,
            limit,
            &mut out,
        );
        diff_table(
            "user_data",
            &self.user_data,
            &actual.user_data,
            limit,
            &mut out,
        );
        diff_table(
            "username_proofs",
            &self.username_proofs,
            &actual.username_proofs,
            limit,
            &mut out,
        );
        diff_table(
            "onchain_events",
            &self.onchain_events,
            &actual.onchain_events,
            limit,
            &mut out,
        );
        out
    }

    /// What a replica built from the hub's current store alone holds (a backfill into an
    /// empty database): the live rows. A removed, superseded, pruned or revoked message is
    /// gone from the hub, so only a replica that saw it before it went can keep its row.
    pub fn live_only(&self) -> ReplicaState {
        ReplicaState {
            casts: self.casts.iter().filter(|row| row.live).cloned().collect(),
            reactions: self
                .reactions
                .iter()
                .filter(|row| row.live)
                .cloned()
                .collect(),
            links: self.links.iter().filter(|row| row.live).cloned().collect(),
            verifications: self
                .verifications
                .iter()
                .filter(|row| row.live)
                .cloned()
                .collect(),
            user_data: self
                .user_data
                .iter()
                .filter(|row| row.live)
                .cloned()
                .collect(),
            username_proofs: self
                .username_proofs
                .iter()
                .filter(|row| row.live)
                .cloned()
                .collect(),
            onchain_events: self.onchain_events.clone(),
        }
    }

    /// Number of rows over all tables.
    pub fn num_rows(&self) -> usize {
        self.casts.len()
            + self.reactions.len()
            + self.links.len()
            + self.verifications.len()
            + self.user_data.len()
            + self.username_proofs.len()
            + self.onchain_events.len()
    }
}

fn diff_table<T: Ord + Clone + std::fmt::Debug>(
    table: &str,
    expected: &[T],
    actual: &[T],
    limit: usize,
    out: &mut Vec<String>,
) {
    let expected: std::collections::BTreeSet<&T> = expected.iter().collect();
    let actual: std::collections::BTreeSet<&T> = actual.iter().collect();
    for row in expected.difference(&actual).take(limit) {
        out.push(format!("{table}: missing or different: {row:?}"));
    }
    for row in actual.difference(&expected).take(limit) {
        out.push(format!("{table}: unexpected: {row:?}"));
    }
}

/// PostgreSQL `text` cannot hold NUL characters: they are stored as U+FFFD. Everything else
/// (other control characters, right-to-left marks, emoji, SQL-looking text) is stored as is.
pub fn sanitize_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_and_other_text_kept() {
        assert_eq!(sanitize_text("a\0b"), "a\u{FFFD}b");
        assert_eq!(
            sanitize_text("'; drop table casts; --\u{202e}"),
            "'; drop table casts; --\u{202e}"
        );
    }

    #[test]
    fn diff_names_missing_and_unexpected_rows() {
        let row = |fid, live| UserDataRow {
            fid,
            user_data_type: 6,
            hash: "aa".into(),
            timestamp: 1,
            value: "alice".into(),
            live,
        };
        let expected = ReplicaState {
            user_data: vec![row(1, true)],
            ..Default::default()
        };
        let actual = ReplicaState {
            user_data: vec![row(1, false)],
            ..Default::default()
        };
        let diff = expected.diff(&actual, 10);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].starts_with("user_data: missing"));
        assert!(diff[1].starts_with("user_data: unexpected"));
        assert!(expected.diff(&expected.clone(), 10).is_empty());
    }
}
