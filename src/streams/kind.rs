//! The stream types: one Redis stream per family of hub events.

use std::fmt;

/// A Redis stream of hub events of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamType {
    Casts,
    Reactions,
    Links,
    Verifications,
    UserData,
    UsernameProofs,
    OnchainEvents,
    /// Message types Waypoint does not model (lend storage, keys, frames, channels, unknown
    /// numbers): kept so `store_messages` can record them.
    Other,
}

/// Dead-letter bucket of events that could not be decoded at all (no type to route by).
pub const UNKNOWN_BUCKET: &str = "unknown";

// MessageType numbers (snapchain-protocol.md §3.2).
const CAST_ADD: i32 = 1;
const CAST_REMOVE: i32 = 2;
const REACTION_ADD: i32 = 3;
const REACTION_REMOVE: i32 = 4;
const LINK_ADD: i32 = 5;
const LINK_REMOVE: i32 = 6;
const VERIFICATION_ADD_ETH_ADDRESS: i32 = 7;
const VERIFICATION_REMOVE: i32 = 8;
const USER_DATA_ADD: i32 = 11;
const USERNAME_PROOF: i32 = 12;
const LINK_COMPACT_STATE: i32 = 14;

impl StreamType {
    /// Every stream type.
    pub const ALL: [StreamType; 8] = [
        StreamType::Casts,
        StreamType::Reactions,
        StreamType::Links,
        StreamType::Verifications,
        StreamType::UserData,
        StreamType::UsernameProofs,
        StreamType::OnchainEvents,
        StreamType::Other,
    ];

    /// The name used in keys, metrics labels and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::Casts => "casts",
            StreamType::Reactions => "reactions",
            StreamType::Links => "links",
            StreamType::Verifications => "verifications",
            StreamType::UserData => "user_data",
            StreamType::UsernameProofs => "username_proofs",
            StreamType::OnchainEvents => "onchain_events",
            StreamType::Other => "other",
        }
    }

    /// Parses a name as printed by [`StreamType::as_str`].
    pub fn parse(name: &str) -> Result<StreamType, String> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|kind| kind.as_str()).collect();
                format!(
                    "unknown stream type {name:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// The stream of a message of this MessageType number (unknown numbers go to `other`).
    pub fn for_message_type(message_type: i32) -> StreamType {
        match message_type {
            CAST_ADD | CAST_REMOVE => StreamType::Casts,
            REACTION_ADD | REACTION_REMOVE => StreamType::Reactions,
            LINK_ADD | LINK_REMOVE | LINK_COMPACT_STATE => StreamType::Links,
            VERIFICATION_ADD_ETH_ADDRESS | VERIFICATION_REMOVE => StreamType::Verifications,
            USER_DATA_ADD => StreamType::UserData,
            USERNAME_PROOF => StreamType::UsernameProofs,
            _ => StreamType::Other,
        }
    }
}

impl fmt::Display for StreamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for kind in StreamType::ALL {
            assert_eq!(StreamType::parse(kind.as_str()), Ok(kind));
        }
        let error = StreamType::parse("cast").unwrap_err();
        assert!(error.contains("casts, reactions"), "{error}");
    }

    #[test]
    fn message_types_route_to_their_stream() {
        assert_eq!(StreamType::for_message_type(1), StreamType::Casts);
        assert_eq!(StreamType::for_message_type(4), StreamType::Reactions);
        assert_eq!(StreamType::for_message_type(14), StreamType::Links);
        assert_eq!(StreamType::for_message_type(8), StreamType::Verifications);
        assert_eq!(StreamType::for_message_type(11), StreamType::UserData);
        assert_eq!(StreamType::for_message_type(12), StreamType::UsernameProofs);
        assert_eq!(StreamType::for_message_type(15), StreamType::Other);
        assert_eq!(StreamType::for_message_type(999), StreamType::Other);
    }
}
