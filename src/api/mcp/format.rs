//! The JSON the tools answer, in the existing Waypoint's shapes, made from the query layer's
//! items (`query::model`), so an answer does not depend on which source gave it.
//!
//! Conventions: hashes are bare lowercase hex, addresses and owners `0x`-prefixed lowercase
//! hex (as the model already holds them); optional and empty fields are left out, as the
//! existing surface does; a "not found" is a successful answer with `found: false`, the
//! inputs echoed and a fixed `error` text.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::query::{
    Cast, CastTarget, Conversation, Embed, Link, LinkCompactState, Profile, Reaction, ReactionType,
    Reply, UsernameProof, Verification,
};

/// A cast in a list or on its own.
#[derive(Debug, Serialize)]
pub struct CastJson<'a> {
    pub fid: u64,
    pub timestamp: u64,
    pub hash: &'a str,
    pub text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mentions: Option<&'a [u64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mentions_positions: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeds: Option<&'a [Embed]>,
    /// `{type: cast, fid, hash}` or `{type: url, url}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<&'a CastTarget>,
}

pub fn cast(cast: &Cast) -> CastJson<'_> {
    CastJson {
        fid: cast.fid,
        timestamp: cast.timestamp,
        hash: &cast.hash,
        text: &cast.text,
        mentions: non_empty(&cast.mentions),
        mentions_positions: non_empty(&cast.mentions_positions),
        embeds: non_empty(&cast.embeds),
        parent: cast.parent.as_ref(),
    }
}

pub fn casts(items: &[Cast]) -> Vec<CastJson<'_>> {
    items.iter().map(cast).collect()
}

fn non_empty<T>(items: &[T]) -> Option<&[T]> {
    (!items.is_empty()).then_some(items)
}

#[derive(Debug, Serialize)]
pub struct CastNotFound<'a> {
    pub fid: u64,
    pub hash: &'a str,
    pub found: bool,
    pub error: &'static str,
}

pub fn cast_not_found(fid: u64, hash: &str) -> CastNotFound<'_> {
    CastNotFound {
        fid,
        hash,
        found: false,
        error: "Cast not found",
    }
}

/// A profile: the user data fields that are set, and (beyond the existing surface, from
/// PostgreSQL when it can be reached) the follower and following counts.
#[derive(Debug, Serialize)]
pub struct ProfileJson<'a> {
    pub fid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pfp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bio: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twitter: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follower_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub following_count: Option<u64>,
}

/// The profile of `get_user_by_fid` / `get_user_by_username`; `asked_name` is the username
/// asked for, shown when the profile sets none.
pub fn profile<'a>(profile: &'a Profile, asked_name: Option<&'a str>) -> ProfileJson<'a> {
    ProfileJson {
        follower_count: profile.follower_count,
        following_count: profile.following_count,
        username: profile.username.as_deref().or(asked_name),
        ..participant(profile)
    }
}

/// A participant's profile in a conversation (the user data fields only).
fn participant(profile: &Profile) -> ProfileJson<'_> {
    ProfileJson {
        fid: profile.fid,
        username: profile.username.as_deref(),
        pfp: profile.pfp.as_deref(),
        display_name: profile.display_name.as_deref(),
        bio: profile.bio.as_deref(),
        url: profile.url.as_deref(),
        location: profile.location.as_deref(),
        twitter: profile.twitter.as_deref(),
        github: profile.github.as_deref(),
        follower_count: None,
        following_count: None,
    }
}

#[derive(Debug, Serialize)]
pub struct VerificationJson<'a> {
    pub fid: u64,
    pub address: &'a str,
    pub protocol: &'a str,
    /// `eoa` or `contract`.
    #[serde(rename = "type")]
    pub verification_type: &'static str,
    /// Always `add`: the query layer answers live verifications only.
    pub action: &'static str,
    pub timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u32>,
}

pub fn verification(verification: &Verification) -> VerificationJson<'_> {
    VerificationJson {
        fid: verification.fid,
        address: &verification.address,
        protocol: &verification.protocol,
        verification_type: match verification.verification_type {
            0 => "eoa",
            1 => "contract",
            _ => "unknown",
        },
        action: "add",
        timestamp: verification.timestamp,
        chain_id: (verification.chain_id > 0).then_some(verification.chain_id),
    }
}

pub fn verifications(items: &[Verification]) -> Vec<VerificationJson<'_>> {
    items.iter().map(verification).collect()
}

#[derive(Debug, Serialize)]
pub struct ReactionJson<'a> {
    pub fid: u64,
    pub timestamp: u64,
    pub hash: &'a str,
    /// `like` or `recast`.
    pub reaction_type: &'static str,
    pub reaction_type_id: i32,
    pub target: &'a CastTarget,
}

pub fn reaction_type_name(reaction_type: ReactionType) -> &'static str {
    match reaction_type {
        ReactionType::Like => "like",
        ReactionType::Recast => "recast",
    }
}

pub fn reaction(reaction: &Reaction) -> ReactionJson<'_> {
    ReactionJson {
        fid: reaction.fid,
        timestamp: reaction.timestamp,
        hash: &reaction.hash,
        reaction_type: reaction_type_name(reaction.reaction_type),
        reaction_type_id: reaction.reaction_type.id(),
        target: &reaction.target,
    }
}

pub fn reactions(items: &[Reaction]) -> Vec<ReactionJson<'_>> {
    items.iter().map(reaction).collect()
}

/// A target cast as echoed beside reactions: `{fid, hash}`.
#[derive(Debug, Serialize)]
pub struct CastRef<'a> {
    pub fid: u64,
    pub hash: &'a str,
}

/// `target_cast` or `target_url`, the one the query used.
pub fn target_echo(target: &CastTarget) -> (Option<CastRef<'_>>, Option<&str>) {
    match target {
        CastTarget::Cast { fid, hash } => (Some(CastRef { fid: *fid, hash }), None),
        CastTarget::Url { url } => (None, Some(url)),
    }
}

#[derive(Debug, Serialize)]
pub struct LinkJson<'a> {
    pub fid: u64,
    pub timestamp: u64,
    pub hash: &'a str,
    pub link_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_fid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_timestamp: Option<u64>,
}

pub fn link(link: &Link) -> LinkJson<'_> {
    LinkJson {
        fid: link.fid,
        timestamp: link.timestamp,
        hash: &link.hash,
        link_type: &link.link_type,
        target_fid: Some(link.target_fid),
        display_timestamp: link.display_timestamp.filter(|value| *value > 0),
    }
}

pub fn links(items: &[Link]) -> Vec<LinkJson<'_>> {
    items.iter().map(link).collect()
}

/// Compact states as links: one per target fid (one without a target for an empty state).
pub fn compact_links(states: &[LinkCompactState]) -> Vec<LinkJson<'_>> {
    let mut links = Vec::new();
    for state in states {
        let entry = |target_fid| LinkJson {
            fid: state.fid,
            timestamp: state.timestamp,
            hash: &state.hash,
            link_type: &state.link_type,
            target_fid,
            display_timestamp: None,
        };
        if state.target_fids.is_empty() {
            links.push(entry(None));
        }
        links.extend(state.target_fids.iter().map(|target| entry(Some(*target))));
    }
    links
}

#[derive(Debug, Serialize)]
pub struct ProofJson<'a> {
    pub name: &'a str,
    /// `fname`, `ens_l1` or `basename`.
    #[serde(rename = "type")]
    pub proof_type: &'a str,
    pub fid: u64,
    pub timestamp: u64,
    pub owner: &'a str,
}

pub fn proof(proof: &UsernameProof) -> ProofJson<'_> {
    ProofJson {
        name: &proof.name,
        proof_type: &proof.proof_type,
        fid: proof.fid,
        timestamp: proof.timestamp,
        owner: &proof.owner,
    }
}

pub fn proofs(items: &[UsernameProof]) -> Vec<ProofJson<'_>> {
    items.iter().map(proof).collect()
}

/// `get_username_proof`: the proof's fields and `found`, or the name and an `error`.
#[derive(Debug, Serialize)]
pub struct ProofLookup<'a> {
    pub name: &'a str,
    pub found: bool,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub proof_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

pub fn proof_lookup<'a>(name: &'a str, found: Option<&'a UsernameProof>) -> ProofLookup<'a> {
    match found {
        Some(proof) => ProofLookup {
            name: &proof.name,
            found: true,
            proof_type: Some(&proof.proof_type),
            fid: Some(proof.fid),
            timestamp: Some(proof.timestamp),
            owner: Some(&proof.owner),
            error: None,
        },
        None => ProofLookup {
            name,
            found: false,
            proof_type: None,
            fid: None,
            timestamp: None,
            owner: None,
            error: Some("Username proof not found"),
        },
    }
}

/// A cast inside a conversation: `id` and `type` first, the parent as `{fid, hash}` or
/// `parent_url`; `replies` and `has_more_replies` only where replies were read.
#[derive(Debug, Serialize)]
pub struct ThreadCast<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub message_type: &'static str,
    pub fid: u64,
    pub timestamp: u64,
    pub text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mentions: Option<&'a [u64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<CastRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeds: Option<&'a [Embed]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quoted_casts: Option<Vec<ThreadCast<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replies: Option<Vec<ThreadCast<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_more_replies: Option<bool>,
}

fn thread_cast(cast: &Cast) -> ThreadCast<'_> {
    let (parent, parent_url) = match &cast.parent {
        Some(CastTarget::Cast { fid, hash }) => (Some(CastRef { fid: *fid, hash }), None),
        Some(CastTarget::Url { url }) => (None, Some(url.as_str())),
        None => (None, None),
    };
    ThreadCast {
        id: &cast.hash,
        message_type: "cast",
        fid: cast.fid,
        timestamp: cast.timestamp,
        text: &cast.text,
        mentions: non_empty(&cast.mentions),
        parent,
        parent_url,
        embeds: non_empty(&cast.embeds),
        quoted_casts: None,
        replies: None,
        has_more_replies: None,
    }
}

fn thread_reply(reply: &Reply) -> ThreadCast<'_> {
    let mut formatted = thread_cast(&reply.cast);
    if !reply.quoted_casts.is_empty() {
        formatted.quoted_casts = Some(reply.quoted_casts.iter().map(thread_cast).collect());
    }
    if reply.replies_read {
        formatted.replies = Some(reply.replies.iter().map(thread_reply).collect());
        formatted.has_more_replies = Some(reply.has_more_replies);
    }
    formatted
}

#[derive(Debug, Serialize)]
pub struct ConversationJson<'a> {
    pub root_cast: ThreadCast<'a>,
    pub participants: Participants<'a>,
    pub topic: &'a str,
    pub summary: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_casts: Option<Vec<ThreadCast<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quoted_casts: Option<Vec<ThreadCast<'a>>>,
    pub conversation: Thread<'a>,
}

/// Every fid that takes part, as decimal strings, and the profiles of those that have one,
/// keyed by the same strings.
#[derive(Debug, Serialize)]
pub struct Participants<'a> {
    pub count: usize,
    pub fids: Vec<String>,
    pub user_data: BTreeMap<String, ProfileJson<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Thread<'a> {
    pub replies: Vec<ThreadCast<'a>>,
    pub has_more: bool,
}

pub fn conversation(conversation: &Conversation) -> ConversationJson<'_> {
    let user_data = conversation
        .participants
        .iter()
        .map(|profile| (profile.fid.to_string(), participant(profile)))
        .collect();
    ConversationJson {
        root_cast: thread_cast(&conversation.cast),
        participants: Participants {
            count: conversation.participant_fids.len(),
            fids: conversation
                .participant_fids
                .iter()
                .map(u64::to_string)
                .collect(),
            user_data,
        },
        topic: &conversation.topic,
        summary: &conversation.summary,
        parent_casts: (!conversation.parent_casts.is_empty())
            .then(|| conversation.parent_casts.iter().map(thread_cast).collect()),
        quoted_casts: (!conversation.quoted_casts.is_empty())
            .then(|| conversation.quoted_casts.iter().map(thread_cast).collect()),
        conversation: Thread {
            replies: conversation.replies.iter().map(thread_reply).collect(),
            has_more: conversation.has_more_replies,
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample_cast(hash: &str, fid: u64, timestamp: u64, text: &str) -> Cast {
        Cast {
            hash: hash.into(),
            fid,
            timestamp,
            text: text.into(),
            parent: None,
            embeds: Vec::new(),
            mentions: Vec::new(),
            mentions_positions: Vec::new(),
        }
    }

    fn sample_profile(fid: u64, username: &str, display_name: &str) -> Profile {
        Profile {
            fid,
            username: Some(username.into()),
            display_name: Some(display_name.into()),
            pfp: None,
            bio: None,
            url: None,
            location: None,
            twitter: None,
            github: None,
            banner: None,
            primary_address_ethereum: None,
            primary_address_solana: None,
            user_data: Vec::new(),
            username_proofs: Vec::new(),
            follower_count: None,
            following_count: None,
        }
    }

    fn value(item: &impl Serialize) -> serde_json::Value {
        serde_json::to_value(item).unwrap()
    }

    #[test]
    fn the_conversation_has_the_contract_shape() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let d = "d".repeat(40);
        let mut root = sample_cast(
            &a,
            1001,
            12,
            "Root cast discussing fixture coverage and compatibility",
        );
        root.mentions = vec![4004];
        root.mentions_positions = vec![0];
        root.parent = Some(CastTarget::Cast {
            fid: 2002,
            hash: b.clone(),
        });
        root.embeds = vec![Embed::Cast {
            fid: 3003,
            hash: c.clone(),
        }];
        let mut reply = sample_cast(&d, 4004, 13, "Reply in thread");
        reply.parent = Some(CastTarget::Cast {
            fid: 1001,
            hash: a.clone(),
        });
        let mut alice = sample_profile(1001, "alice", "Alice");
        alice.pfp = Some("https://example.com/alice.png".into());
        alice.bio = Some("building typed contracts".into());
        let conversation = Conversation {
            cast: root,
            parent_casts: vec![sample_cast(&b, 2002, 10, "Parent context cast")],
            quoted_casts: vec![sample_cast(&c, 3003, 11, "Quoted cast content")],
            replies: vec![Reply {
                cast: reply,
                quoted_casts: Vec::new(),
                replies: Vec::new(),
                replies_read: true,
                has_more_replies: false,
            }],
            has_more_replies: false,
            participant_fids: vec![1001, 2002, 3003, 4004],
            participants: vec![
                alice,
                sample_profile(2002, "bob", "Bob"),
                sample_profile(3003, "carol", "Carol"),
                sample_profile(4004, "dave", "Dave"),
            ],
            topic: "Root cast discussing fixture coverage...".into(),
            summary: "Conversation started by Alice (@alice) with: \"Root cast discussing fixture coverage and compatib...\". 1 replies in the thread.".into(),
        };
        let expected = json!({
            "root_cast": {
                "id": a, "type": "cast", "fid": 1001, "timestamp": 12,
                "text": "Root cast discussing fixture coverage and compatibility",
                "mentions": [4004],
                "parent": {"fid": 2002, "hash": b},
                "embeds": [{"type": "cast", "fid": 3003, "hash": c}]
            },
            "participants": {
                "count": 4,
                "fids": ["1001", "2002", "3003", "4004"],
                "user_data": {
                    "1001": {"fid": 1001, "username": "alice", "pfp": "https://example.com/alice.png",
                             "display_name": "Alice", "bio": "building typed contracts"},
                    "2002": {"fid": 2002, "username": "bob", "display_name": "Bob"},
                    "3003": {"fid": 3003, "username": "carol", "display_name": "Carol"},
                    "4004": {"fid": 4004, "username": "dave", "display_name": "Dave"}
                }
            },
            "topic": "Root cast discussing fixture coverage...",
            "summary": "Conversation started by Alice (@alice) with: \"Root cast discussing fixture coverage and compatib...\". 1 replies in the thread.",
            "parent_casts": [{"id": b, "type": "cast", "fid": 2002, "timestamp": 10, "text": "Parent context cast"}],
            "quoted_casts": [{"id": c, "type": "cast", "fid": 3003, "timestamp": 11, "text": "Quoted cast content"}],
            "conversation": {
                "replies": [{
                    "id": d, "type": "cast", "fid": 4004, "timestamp": 13, "text": "Reply in thread",
                    "parent": {"fid": 1001, "hash": a},
                    "replies": [], "has_more_replies": false
                }],
                "has_more": false
            }
        });
        assert_eq!(value(&self::conversation(&conversation)), expected);
    }

    #[test]
    fn reactions_links_and_proofs_have_the_contract_shapes() {
        let reaction = Reaction {
            hash: "f".repeat(40),
            fid: 5005,
            timestamp: 23,
            reaction_type: ReactionType::Recast,
            target: CastTarget::Url {
                url: "https://example.com/post/123".into(),
            },
        };
        assert_eq!(
            value(&self::reaction(&reaction)),
            json!({"fid": 5005, "timestamp": 23, "hash": "f".repeat(40), "reaction_type": "recast",
                   "reaction_type_id": 2, "target": {"type": "url", "url": "https://example.com/post/123"}})
        );
        let link = Link {
            hash: "12".repeat(20),
            fid: 5005,
            timestamp: 24,
            link_type: "follow".into(),
            target_fid: 1001,
            display_timestamp: Some(77),
        };
        assert_eq!(
            value(&self::link(&link)),
            json!({"fid": 5005, "timestamp": 24, "hash": "12".repeat(20), "link_type": "follow",
                   "target_fid": 1001, "display_timestamp": 77})
        );
        let state = LinkCompactState {
            hash: "34".repeat(20),
            fid: 1001,
            timestamp: 25,
            link_type: "follow".into(),
            target_fids: vec![5005, 4004],
        };
        assert_eq!(
            value(&compact_links(std::slice::from_ref(&state))),
            json!([
                {"fid": 1001, "timestamp": 25, "hash": "34".repeat(20), "link_type": "follow", "target_fid": 5005},
                {"fid": 1001, "timestamp": 25, "hash": "34".repeat(20), "link_type": "follow", "target_fid": 4004}
            ])
        );
        let proof = UsernameProof {
            name: "alice".into(),
            fid: 1001,
            timestamp: 1_700_000_000,
            proof_type: "fname".into(),
            owner: "0xaabb".into(),
            signature: "00".into(),
        };
        assert_eq!(
            value(&self::proof(&proof)),
            json!({"name": "alice", "type": "fname", "fid": 1001, "timestamp": 1_700_000_000u64, "owner": "0xaabb"})
        );
        assert_eq!(
            value(&proof_lookup("nobody", None)),
            json!({"name": "nobody", "found": false, "error": "Username proof not found"})
        );
    }

    #[test]
    fn casts_leave_out_what_is_empty() {
        let mut cast = sample_cast("ab", 7, 3, "héllo 🦀");
        assert_eq!(
            value(&self::cast(&cast)),
            json!({"fid": 7, "timestamp": 3, "hash": "ab", "text": "héllo 🦀"})
        );
        cast.parent = Some(CastTarget::Url {
            url: "https://example.com".into(),
        });
        cast.embeds = vec![Embed::Url {
            url: "https://example.com/a".into(),
        }];
        assert_eq!(
            value(&self::cast(&cast)),
            json!({"fid": 7, "timestamp": 3, "hash": "ab", "text": "héllo 🦀",
                   "embeds": [{"type": "url", "url": "https://example.com/a"}],
                   "parent": {"type": "url", "url": "https://example.com"}})
        );
    }
}
