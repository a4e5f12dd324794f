//! Page cursors: opaque to clients (base64url of a small JSON object), meaningful to both
//! sources. A page from the hub carries the hub's page token *and* the position of its last
//! item; a page from the database carries the position only. Both sources order a list the
//! same way, so the database can continue a list the hub began (when the hub fails between
//! pages), while the hub continues only from its own token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::QueryError;

/// Where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The hub's page token, hex.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "h")]
    pub hub_token: Option<String>,
    /// The position of the last item returned: the list's sort key.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "k")]
    pub after: Option<Position>,
}

/// A list position: the timestamp the list is ordered by and the tie-breaking key (a hash, or
/// for on-chain events `block_number:log_index`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(rename = "t")]
    pub timestamp: u64,
    #[serde(rename = "i")]
    pub key: String,
}

/// Longest cursor accepted (a hub token is a storage key: well under this).
const MAX_CURSOR_LEN: usize = 2048;

impl Cursor {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a cursor from a request; names `param` when it is not one of ours.
    pub fn decode(param: &'static str, text: &str) -> Result<Cursor, QueryError> {
        let invalid = || QueryError::invalid(param, "not a cursor from a previous page");
        if text.len() > MAX_CURSOR_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if let Some(token) = &cursor.hub_token {
            hex::decode(token).map_err(|_| invalid())?;
        }
        if cursor.hub_token.is_none() && cursor.after.is_none() {
            return Err(invalid());
        }
        Ok(cursor)
    }

    /// The hub page token, as bytes.
    pub fn hub_token_bytes(&self) -> Option<Vec<u8>> {
        self.hub_token
            .as_deref()
            .and_then(|token| hex::decode(token).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let cursor = Cursor {
            hub_token: Some("00ff".into()),
            after: Some(Position {
                timestamp: 7,
                key: "abcd".into(),
            }),
        };
        let text = cursor.encode();
        assert_eq!(Cursor::decode("cursor", &text).unwrap(), cursor);
        for bad in ["", "!!", "e30", "bm90IGpzb24", &"A".repeat(5000)] {
            let error = Cursor::decode("cursor", bad).unwrap_err();
            assert!(error.to_string().starts_with("cursor:"), "{error}");
        }
    }
}
