//! Reading request parameters: every path segment and query parameter is checked here and a
//! bad one becomes a 400 naming it. Parameters are read by hand from the matched path and the
//! raw query string (rather than through axum's typed `Path`/`Query`), so no axum rejection
//! text ever reaches a client, and an unknown or repeated query parameter is refused instead of
//! silently ignored.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::error::ApiError;
use crate::query::cursor::Cursor;
use crate::query::{
    CONVERSATION_MAX_DEPTH, ConversationRequest, MAX_PAGE_SIZE, PageRequest, ReactionType,
    TimeWindow,
};

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 25;
/// Longest `q` of a search, in characters: a search phrase, not a document.
pub const MAX_QUERY_CHARS: usize = 256;
/// Longest `url` accepted, in bytes (the protocol caps parent URLs at 256 bytes; some room for
/// percent-encoding differences).
pub const MAX_URL_BYTES: usize = 1024;
/// Longest username (ENS names can be long; fnames are at most 16 characters).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest link type (the protocol's limit).
pub const MAX_LINK_TYPE_BYTES: usize = 8;
/// A conversation's defaults, as the existing Waypoint's `get_conversation`.
pub const DEFAULT_CONVERSATION_MAX_DEPTH: u32 = 5;
pub const DEFAULT_CONVERSATION_LIMIT: u32 = 10;
/// Largest fid accepted: fids are stored as PostgreSQL `bigint`.
const MAX_FID: u64 = i64::MAX as u64;

/// The parameters of one request: the matched path's segments and the query string.
#[derive(Debug, Default)]
pub struct Args {
    path: Vec<(String, String)>,
    query: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Args {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Args, ApiError> {
        let path = match Path::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Path(path)) => path,
            Err(PathRejection::MissingPathParams(_)) => Vec::new(),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                let param = match error.kind() {
                    axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key } => key.clone(),
                    _ => "path".to_owned(),
                };
                return Err(ApiError::invalid(&param, "not valid UTF-8"));
            }
            Err(other) => return Err(ApiError::invalid("path", other.body_text())),
        };
        let query = parts
            .uri
            .query()
            .map(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Args { path, query })
    }
}

impl Args {
    /// Arguments from parts already split (unit tests).
    #[cfg(test)]
    fn new(path: &[(&str, &str)], query: &[(&str, &str)]) -> Args {
        let own = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect()
        };
        Args {
            path: own(path),
            query: own(query),
        }
    }

    /// Refuses query parameters this route does not take, and any given twice.
    pub fn only(&self, allowed: &[&str]) -> Result<&Args, ApiError> {
        for (index, (name, _)) in self.query.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let expected = if allowed.is_empty() {
                    "this route takes no query parameters".to_owned()
                } else {
                    format!("expected one of {}", allowed.join(", "))
                };
                return Err(ApiError::invalid(
                    &printable(name),
                    format!("unknown parameter; {expected}"),
                ));
            }
            if self.query[..index].iter().any(|(seen, _)| seen == name) {
                return Err(ApiError::invalid(name, "given more than once"));
            }
        }
        Ok(self)
    }

    fn path_value(&self, name: &str) -> Result<&str, ApiError> {
        self.path
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .ok_or_else(|| ApiError::invalid(name, "missing"))
    }

    fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A fid from the path.
    pub fn fid(&self, name: &str) -> Result<u64, ApiError> {
        parse_fid(name, self.path_value(name)?)
    }

    /// A 20-byte message hash from the path.
    pub fn hash(&self, name: &str) -> Result<Vec<u8>, ApiError> {
        parse_hash(name, self.path_value(name)?)
    }

    /// A username from the path, lowercased.
    pub fn name(&self, name: &str) -> Result<String, ApiError> {
        parse_name(name, self.path_value(name)?)
    }

    /// A verified address from the path, normalised as `Verification::address`.
    pub fn address(&self, name: &str) -> Result<String, ApiError> {
        parse_address(name, self.path_value(name)?)
    }

    /// `limit` and `cursor`.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.query_value("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => parse_bounded("limit", text, 1, MAX_PAGE_SIZE)?,
        };
        let cursor = match self.query_value("cursor") {
            None | Some("") => None,
            Some(text) => Some(Cursor::decode("cursor", text)?),
        };
        Ok(PageRequest { limit, cursor })
    }

    /// A required URL from the query.
    pub fn url(&self, name: &str) -> Result<String, ApiError> {
        let text = self
            .query_value(name)
            .ok_or_else(|| ApiError::invalid(name, "missing; pass the URL, percent-encoded"))?;
        parse_url(name, text)
    }

    /// The search text `q`.
    pub fn search_text(&self, name: &str) -> Result<String, ApiError> {
        let text = self
            .query_value(name)
            .ok_or_else(|| ApiError::invalid(name, "missing"))?;
        parse_search_text(name, text)
    }

    /// `start_time` and `end_time`, Unix seconds; `None` when neither is given.
    pub fn window(&self) -> Result<Option<TimeWindow>, ApiError> {
        let start = self
            .query_value("start_time")
            .map(|text| parse_seconds("start_time", text))
            .transpose()?;
        let end = self
            .query_value("end_time")
            .map(|text| parse_seconds("end_time", text))
            .transpose()?;
        if let (Some(start), Some(end)) = (start, end)
            && start > end
        {
            return Err(ApiError::invalid(
                "end_time",
                format!("{end} is before start_time {start}"),
            ));
        }
        Ok((start.is_some() || end.is_some()).then_some(TimeWindow { start, end }))
    }

    /// `reaction_type`, when given.
    pub fn reaction_type(&self) -> Result<Option<ReactionType>, ApiError> {
        self.query_value("reaction_type")
            .map(|text| parse_reaction_type("reaction_type", text))
            .transpose()
    }

    /// `link_type`, when given (absent or `any`: every type).
    pub fn link_type(&self) -> Result<Option<String>, ApiError> {
        match self.query_value("link_type") {
            None | Some("any") => Ok(None),
            Some(text) => parse_link_type("link_type", text).map(Some),
        }
    }

    /// `event_type` by name or number, when given.
    pub fn event_type(&self) -> Result<Option<i32>, ApiError> {
        self.query_value("event_type")
            .map(|text| parse_event_type("event_type", text))
            .transpose()
    }

    /// `recursive`, `max_depth` and `limit` of a conversation.
    pub fn conversation(&self) -> Result<ConversationRequest, ApiError> {
        let recursive = match self.query_value("recursive") {
            None => false,
            Some(text) => parse_bool("recursive", text)?,
        };
        let max_depth = match self.query_value("max_depth") {
            None => DEFAULT_CONVERSATION_MAX_DEPTH,
            Some(text) => parse_bounded("max_depth", text, 1, CONVERSATION_MAX_DEPTH)?,
        };
        let limit = match self.query_value("limit") {
            None => DEFAULT_CONVERSATION_LIMIT,
            Some(text) => parse_bounded("limit", text, 1, MAX_PAGE_SIZE)?,
        };
        Ok(ConversationRequest {
            recursive,
            max_depth,
            limit,
        })
    }
}

/// A parameter value short and printable enough to quote in a message.
fn quoted(value: &str) -> String {
    let short: String = value.chars().take(64).collect();
    let suffix = if short.len() < value.len() { "..." } else { "" };
    format!("{:?}{suffix}", short)
}

/// A parameter name safe to quote (a client may send anything as a name).
fn printable(name: &str) -> String {
    let short: String = name.chars().take(64).filter(|c| !c.is_control()).collect();
    if short.is_empty() {
        "(empty name)".to_owned()
    } else {
        short
    }
}

fn parse_fid(name: &str, text: &str) -> Result<u64, ApiError> {
    let invalid = || {
        ApiError::invalid(
            name,
            format!("{} is not a fid (a positive integer)", quoted(text)),
        )
    };
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    match text.parse::<u64>() {
        Ok(0) => Err(invalid()),
        Ok(fid) if fid <= MAX_FID => Ok(fid),
        _ => Err(ApiError::invalid(
            name,
            format!("{} is larger than the largest fid {MAX_FID}", quoted(text)),
        )),
    }
}

fn parse_hash(name: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    let hex_text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if hex_text.len() != 40 {
        return Err(ApiError::invalid(
            name,
            format!(
                "{} is not a message hash (40 hex characters, optionally 0x-prefixed)",
                quoted(text)
            ),
        ));
    }
    hex::decode(hex_text).map_err(|_| {
        ApiError::invalid(
            name,
            format!(
                "{} is not hex (40 hex characters, optionally 0x-prefixed)",
                quoted(text)
            ),
        )
    })
}

fn parse_name(name: &str, text: &str) -> Result<String, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(name, "empty"));
    }
    if text.len() > MAX_NAME_BYTES {
        return Err(ApiError::invalid(
            name,
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return Err(ApiError::invalid(
            name,
            format!("{} is not a username", quoted(text)),
        ));
    }
    Ok(text.to_ascii_lowercase())
}

const BASE58_ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn parse_address(name: &str, text: &str) -> Result<String, ApiError> {
    let hex_part = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
    if let Some(hex_part) = hex_part {
        if hex_part.len() == 40 && hex_part.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Ok(format!("0x{}", hex_part.to_ascii_lowercase()));
        }
    } else if (32..=44).contains(&text.len()) && text.chars().all(|c| BASE58_ALPHABET.contains(c)) {
        return Ok(text.to_owned());
    }
    Err(ApiError::invalid(
        name,
        format!(
            "{} is not an address (0x and 40 hex characters for Ethereum, base58 for Solana)",
            quoted(text)
        ),
    ))
}

fn parse_bounded(name: &str, text: &str, min: u32, max: u32) -> Result<u32, ApiError> {
    let invalid = || {
        ApiError::invalid(
            name,
            format!("{} is not an integer from {min} to {max}", quoted(text)),
        )
    };
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    match text.parse::<u32>() {
        Ok(value) if (min..=max).contains(&value) => Ok(value),
        _ => Err(invalid()),
    }
}

fn parse_seconds(name: &str, text: &str) -> Result<u64, ApiError> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ApiError::invalid(
            name,
            format!("{} is not a time (Unix seconds)", quoted(text)),
        ));
    }
    text.parse::<u64>()
        .ok()
        .filter(|seconds| *seconds <= i64::MAX as u64)
        .ok_or_else(|| ApiError::invalid(name, format!("{} is out of range", quoted(text))))
}

fn parse_url(name: &str, text: &str) -> Result<String, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(name, "empty"));
    }
    if text.len() > MAX_URL_BYTES {
        return Err(ApiError::invalid(
            name,
            format!("longer than {MAX_URL_BYTES} bytes"),
        ));
    }
    Ok(text.to_owned())
}

fn parse_search_text(name: &str, text: &str) -> Result<String, ApiError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid(name, "empty; give 1 to 256 characters"));
    }
    if trimmed.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::invalid(
            name,
            format!("longer than {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

fn parse_reaction_type(name: &str, text: &str) -> Result<ReactionType, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "like" | "1" => Ok(ReactionType::Like),
        "recast" | "2" => Ok(ReactionType::Recast),
        _ => Err(ApiError::invalid(
            name,
            format!(
                "{} is not a reaction type; expected like, recast, 1 or 2",
                quoted(text)
            ),
        )),
    }
}

fn parse_link_type(name: &str, text: &str) -> Result<String, ApiError> {
    let valid = !text.is_empty()
        && text.len() <= MAX_LINK_TYPE_BYTES
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(ApiError::invalid(
            name,
            format!(
                "{} is not a link type (1 to {MAX_LINK_TYPE_BYTES} letters, digits, _ or -, e.g. follow), or any",
                quoted(text)
            ),
        ))
    }
}

/// On-chain event type names and their OnChainEventType numbers.
pub const EVENT_TYPES: [(&str, i32); 5] = [
    ("signer", 1),
    ("signer_migrated", 2),
    ("id_register", 3),
    ("storage_rent", 4),
    ("tier_purchase", 5),
];

fn parse_event_type(name: &str, text: &str) -> Result<i32, ApiError> {
    let lower = text.to_ascii_lowercase();
    let bare = lower.strip_prefix("event_type_").unwrap_or(&lower);
    let found = EVENT_TYPES
        .iter()
        .find(|(event_name, number)| *event_name == bare || number.to_string() == bare)
        .map(|(_, number)| *number);
    found.ok_or_else(|| {
        let names: Vec<String> = EVENT_TYPES
            .iter()
            .map(|(event_name, number)| format!("{event_name} ({number})"))
            .collect();
        ApiError::invalid(
            name,
            format!(
                "{} is not an on-chain event type; expected one of {}",
                quoted(text),
                names.join(", ")
            ),
        )
    })
}

fn parse_bool(name: &str, text: &str) -> Result<bool, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::invalid(
            name,
            format!("{} is not true or false", quoted(text)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: ApiError) -> String {
        error.message()
    }

    #[test]
    fn fids_are_positive_integers() {
        assert_eq!(parse_fid("fid", "42").unwrap(), 42);
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "abc",
            "1.5",
            " 1",
            "99999999999999999999",
        ] {
            let error = message(parse_fid("fid", bad).unwrap_err());
            assert!(error.starts_with("fid: "), "{bad}: {error}");
        }
    }

    #[test]
    fn hashes_are_forty_hex_characters() {
        let hash = "ab".repeat(20);
        assert_eq!(parse_hash("hash", &hash).unwrap(), vec![0xab; 20]);
        assert_eq!(
            parse_hash("hash", &format!("0x{hash}")).unwrap(),
            vec![0xab; 20]
        );
        for bad in ["zz", "", &"zz".repeat(20), &"ab".repeat(21)] {
            assert!(message(parse_hash("hash", bad).unwrap_err()).starts_with("hash: "));
        }
    }

    #[test]
    fn limits_and_cursors() {
        assert_eq!(Args::default().page().unwrap().limit, DEFAULT_LIMIT);
        let page = Args::new(&[], &[("limit", "1000")]).page().unwrap();
        assert_eq!(page.limit, 1000);
        for bad in ["0", "1001", "5000", "-1", "x", ""] {
            let error = Args::new(&[], &[("limit", bad)]).page().unwrap_err();
            assert!(error.message().starts_with("limit: "), "{bad}");
        }
        let error = Args::new(&[], &[("cursor", "garbage")]).page().unwrap_err();
        assert!(error.message().starts_with("cursor: "));
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let args = Args::new(&[], &[("limt", "2")]);
        assert!(
            args.only(&["limit"])
                .unwrap_err()
                .message()
                .starts_with("limt: ")
        );
        let args = Args::new(&[], &[("limit", "2"), ("limit", "3")]);
        assert!(
            args.only(&["limit"])
                .unwrap_err()
                .message()
                .starts_with("limit: ")
        );
        assert!(Args::new(&[], &[("limit", "2")]).only(&["limit"]).is_ok());
    }

    #[test]
    fn text_parameters() {
        assert!(parse_search_text("q", "  ").is_err());
        assert!(parse_search_text("q", &"é".repeat(256)).is_ok());
        assert!(parse_search_text("q", &"é".repeat(257)).is_err());
        assert_eq!(parse_name("name", "Alice").unwrap(), "alice");
        assert!(parse_name("name", "a b").is_err());
        assert_eq!(
            parse_address("address", &format!("0x{}", "AB".repeat(20))).unwrap(),
            format!("0x{}", "ab".repeat(20))
        );
        assert!(parse_address("address", "0x12").is_err());
        assert!(parse_address("address", "So11111111111111111111111111111111111111112").is_ok());
        assert_eq!(parse_event_type("event_type", "id_register").unwrap(), 3);
        assert_eq!(
            parse_event_type("event_type", "EVENT_TYPE_SIGNER").unwrap(),
            1
        );
        assert_eq!(parse_event_type("event_type", "4").unwrap(), 4);
        assert!(parse_event_type("event_type", "9").is_err());
        assert_eq!(
            parse_reaction_type("reaction_type", "2").unwrap(),
            ReactionType::Recast
        );
        assert!(parse_reaction_type("reaction_type", "love").is_err());
        assert!(parse_link_type("link_type", "follow").is_ok());
        assert!(parse_link_type("link_type", "toolonglink").is_err());
    }

    #[test]
    fn time_windows() {
        let window = Args::new(&[], &[("start_time", "10"), ("end_time", "20")])
            .window()
            .unwrap();
        assert_eq!(
            window,
            Some(TimeWindow {
                start: Some(10),
                end: Some(20)
            })
        );
        assert_eq!(Args::default().window().unwrap(), None);
        let error = Args::new(&[], &[("start_time", "20"), ("end_time", "10")])
            .window()
            .unwrap_err();
        assert!(error.message().starts_with("end_time: "));
    }
}
