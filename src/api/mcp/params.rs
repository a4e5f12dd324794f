//! The tools' arguments (names and defaults as the existing Waypoint's MCP surface) and the
//! checks that turn them into query-layer values. A check that fails gives the JSON-RPC
//! invalid-params error with the message clients of the existing Waypoint match on.

use rmcp::ErrorData;
use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::schemars::{self, JsonSchema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::query::{CastTarget, MAX_PAGE_SIZE, PageRequest, ReactionType, TimeWindow};

/// Items per list when `limit` is not given (the existing surface's default).
const DEFAULT_LIMIT: u32 = 10;
/// Reply levels a conversation reads when `max_depth` is not given.
const DEFAULT_MAX_DEPTH: u32 = 5;
/// The link type when `get_link` is not told one: follows are what clients ask about.
pub const DEFAULT_LINK_TYPE: &str = "follow";
/// Longest hash accepted, in hex digits (a Farcaster hash is 40): anything longer is not a
/// hash, and is refused before it reaches a source.
const MAX_HASH_HEX_LEN: usize = 128;
/// Longest text accepted for names, URLs and search queries, in bytes.
const MAX_TEXT_LEN: usize = 2048;

/// A tool's arguments, read from the call's `arguments` object.
///
/// rmcp's own wrapper of the same name answers arguments of the wrong JSON type (`"fid":
/// "one"`) with a successful result flagged `isError`; the existing Waypoint, and our
/// clients, get a JSON-RPC invalid-params error (-32602) for them, as for every other invalid
/// input. The `#[tool]` macro finds this wrapper by its name and takes the input schema from
/// it.
#[derive(Debug)]
pub struct Parameters<P>(pub P);

impl<P: JsonSchema> JsonSchema for Parameters<P> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        P::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        P::json_schema(generator)
    }
}

impl<S, P: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Parameters<P> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        serde_json::from_value(serde_json::Value::Object(arguments))
            .map(Parameters)
            .map_err(|error| ErrorData::invalid_params(format!("Invalid arguments: {error}"), None))
    }
}

fn default_limit() -> u32 {
    DEFAULT_LIMIT
}

fn default_max_depth() -> u32 {
    DEFAULT_MAX_DEPTH
}

fn default_link_type() -> String {
    DEFAULT_LINK_TYPE.to_owned()
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FidArgs {
    /// Farcaster user ID
    pub fid: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FidLimitArgs {
    /// Farcaster user ID
    pub fid: u64,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FidWindowArgs {
    /// Farcaster user ID
    pub fid: u64,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Earliest message timestamp to include, Unix seconds (optional)
    pub start_time: Option<u64>,
    /// Latest message timestamp to include, Unix seconds (optional)
    pub end_time: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UsernameArgs {
    /// Farcaster username (without the @ symbol)
    pub username: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NameArgs {
    /// Username to look up (e.g. alice, vitalik.eth)
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct VerificationArgs {
    /// Farcaster user ID
    pub fid: u64,
    /// Verified address: Ethereum hex (with or without 0x) or Solana base58
    pub address: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CastArgs {
    /// Farcaster user ID of the cast author
    pub fid: u64,
    /// Hash of the cast in hex format (with or without 0x)
    pub hash: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ParentArgs {
    /// Farcaster user ID of the parent cast author
    pub parent_fid: u64,
    /// Hash of the parent cast in hex format (with or without 0x)
    pub parent_hash: String,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ParentUrlArgs {
    /// URL of the parent content (a channel, a web page)
    pub parent_url: String,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConversationArgs {
    /// Farcaster user ID of the cast author (number; a numeric string is accepted too)
    #[serde(deserialize_with = "fid_from_number_or_string")]
    #[schemars(with = "u64")]
    pub fid: u64,
    /// Cast hash in hex format (with or without 0x)
    pub cast_hash: String,
    /// Whether to include nested replies (replies to replies)
    #[serde(default)]
    pub recursive: bool,
    /// Maximum depth of the reply tree to read (default 5)
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// Maximum number of replies to read per level (default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReactionArgs {
    /// Farcaster user ID of the reaction author
    pub fid: u64,
    /// Reaction type (1 = Like, 2 = Recast)
    pub reaction_type: i64,
    /// Target cast author FID (together with target_cast_hash)
    pub target_cast_fid: Option<u64>,
    /// Target cast hash in hex format (together with target_cast_fid)
    pub target_cast_hash: Option<String>,
    /// Target URL (instead of a target cast; wins when both are given)
    pub target_url: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReactionsByFidArgs {
    /// Farcaster user ID
    pub fid: u64,
    /// Reaction type (1 = Like, 2 = Recast, omit for all types)
    pub reaction_type: Option<i64>,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReactionsByTargetArgs {
    /// Target cast author FID (together with target_cast_hash)
    pub target_cast_fid: Option<u64>,
    /// Target cast hash in hex format (together with target_cast_fid)
    pub target_cast_hash: Option<String>,
    /// Target URL (instead of a target cast; wins when both are given)
    pub target_url: Option<String>,
    /// Reaction type (1 = Like, 2 = Recast, omit for all types)
    pub reaction_type: Option<i64>,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LinkArgs {
    /// Farcaster user ID of the link author
    pub fid: u64,
    /// Link type (default 'follow')
    #[serde(default = "default_link_type")]
    pub link_type: String,
    /// Target Farcaster user ID
    pub target_fid: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LinksByFidArgs {
    /// Farcaster user ID
    pub fid: u64,
    /// Link type filter (omit or null for all types)
    #[serde(default)]
    pub link_type: Option<String>,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct LinksByTargetArgs {
    /// Target Farcaster user ID
    pub target_fid: u64,
    /// Link type filter (omit or null for all types)
    #[serde(default)]
    pub link_type: Option<String>,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// Words to look for in cast text (PostgreSQL full-text search, best match first)
    pub query: String,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// The next_cursor of a previous answer, for the next page
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FeedArgs {
    /// Farcaster user ID whose followed accounts' casts to show
    pub fid: u64,
    /// Maximum number of results to return (1 to 1000, default 10)
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// The next_cursor of a previous answer, for the next page
    pub cursor: Option<String>,
}

fn fid_from_number_or_string<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        String(String),
    }
    match NumberOrString::deserialize(deserializer)? {
        NumberOrString::Number(fid) => Ok(fid),
        NumberOrString::String(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| serde::de::Error::custom(format!("Invalid FID: {text}"))),
    }
}

/// The invalid-params error with `message`.
pub fn invalid(message: impl Into<String>) -> ErrorData {
    ErrorData::invalid_params(message.into(), None)
}

/// A fid: FIDs start at 1.
pub fn fid(param: &'static str, value: u64) -> Result<u64, ErrorData> {
    if value == 0 {
        return Err(invalid(format!(
            "Invalid {param}: 0 (Farcaster IDs start at 1)"
        )));
    }
    Ok(value)
}

/// A first page of `limit` items.
pub fn page(limit: u32) -> Result<PageRequest, ErrorData> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(invalid(format!(
            "Invalid limit: {limit} (expected 1 to {MAX_PAGE_SIZE})"
        )));
    }
    Ok(PageRequest {
        limit,
        cursor: None,
    })
}

/// A page of `limit` items after `cursor` (the `next_cursor` of a previous answer).
pub fn page_after(limit: u32, cursor: Option<&str>) -> Result<PageRequest, ErrorData> {
    let mut request = page(limit)?;
    if let Some(text) = cursor.filter(|text| !text.is_empty()) {
        let decoded = crate::query::cursor::Cursor::decode("cursor", text)
            .map_err(|error| invalid(format!("Invalid cursor: {error}")))?;
        request.cursor = Some(decoded);
    }
    Ok(request)
}

/// A cast hash given in hex, with or without `0x`: its bytes and its normalised form (bare
/// lowercase hex).
pub fn hash(text: &str) -> Result<(Vec<u8>, String), ErrorData> {
    let digits = strip_0x(text.trim());
    if digits.is_empty() {
        return Err(invalid("Missing hash value"));
    }
    if digits.len() > MAX_HASH_HEX_LEN {
        return Err(invalid(format!(
            "Invalid hash format: {} (longer than {MAX_HASH_HEX_LEN} hex digits)",
            crate::query::truncate_chars(text, 48)
        )));
    }
    let bytes = hex::decode(digits).map_err(|_| invalid(format!("Invalid hash format: {text}")))?;
    let normalised = hex::encode(&bytes);
    Ok((bytes, normalised))
}

/// A verified address: an Ethereum address in hex (`0x` optional) becomes `0x` + lowercase hex;
/// a Solana address in base58 stays as given.
pub fn address(text: &str) -> Result<String, ErrorData> {
    let trimmed = text.trim();
    let has_prefix = trimmed.starts_with("0x") || trimmed.starts_with("0X");
    let digits = strip_0x(trimmed);
    if digits.is_empty() {
        return Err(invalid("Invalid address format: empty address"));
    }
    if digits.len() <= MAX_HASH_HEX_LEN
        && let Ok(bytes) = hex::decode(digits)
    {
        return Ok(format!("0x{}", hex::encode(bytes)));
    }
    if !has_prefix && is_base58_address(digits) {
        return Ok(digits.to_owned());
    }
    Err(invalid(format!(
        "Invalid address format: {}",
        crate::query::truncate_chars(text, 100)
    )))
}

/// Looks like a Solana address: 32 bytes in base58 are 32 to 44 characters of its alphabet.
fn is_base58_address(text: &str) -> bool {
    const ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    (32..=44).contains(&text.len()) && text.chars().all(|c| ALPHABET.contains(c))
}

fn strip_0x(text: &str) -> &str {
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
}

/// A reaction type number: 1 like, 2 recast.
pub fn reaction_type(value: i64) -> Result<ReactionType, ErrorData> {
    i32::try_from(value)
        .ok()
        .and_then(ReactionType::from_id)
        .ok_or_else(|| {
            invalid(format!(
                "Invalid reaction type: {value} (expected 1=Like or 2=Recast)"
            ))
        })
}

pub fn optional_reaction_type(value: Option<i64>) -> Result<Option<ReactionType>, ErrorData> {
    value.map(reaction_type).transpose()
}

/// A reaction target: the URL when one is given (it wins over a cast), else the cast, which
/// needs both its fid and its hash.
pub fn reaction_target(
    target_cast_fid: Option<u64>,
    target_cast_hash: Option<&str>,
    target_url: Option<&str>,
) -> Result<CastTarget, ErrorData> {
    if let Some(url) = target_url {
        if url.trim().is_empty() {
            return Err(invalid("target_url cannot be empty"));
        }
        return Ok(CastTarget::Url {
            url: text("target_url", url)?,
        });
    }
    match (target_cast_fid, target_cast_hash) {
        (Some(cast_fid), Some(cast_hash)) => {
            let cast_fid = fid("target_cast_fid", cast_fid)?;
            let (_, normalised) = hash(cast_hash)?;
            Ok(CastTarget::Cast {
                fid: cast_fid,
                hash: normalised,
            })
        }
        (None, None) => Err(invalid(
            "Either target_url or both target_cast_fid and target_cast_hash are required",
        )),
        _ => Err(invalid(
            "target_cast_fid and target_cast_hash must be provided together",
        )),
    }
}

/// A non-empty text parameter of bounded length.
pub fn text(param: &'static str, value: &str) -> Result<String, ErrorData> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{param} cannot be empty")));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(invalid(format!(
            "{param} is too long ({} bytes, at most {MAX_TEXT_LEN})",
            value.len()
        )));
    }
    Ok(value.to_owned())
}

/// A link type filter: absent or blank means every type.
pub fn link_type_filter(value: Option<&str>) -> Result<Option<String>, ErrorData> {
    match value {
        Some(link_type) if !link_type.trim().is_empty() => Ok(Some(text("link_type", link_type)?)),
        _ => Ok(None),
    }
}

/// A time window; the start may not be after the end.
pub fn window(start_time: Option<u64>, end_time: Option<u64>) -> Result<TimeWindow, ErrorData> {
    if let (Some(start), Some(end)) = (start_time, end_time)
        && start > end
    {
        return Err(invalid(format!(
            "Invalid time window: start_time {start} is after end_time {end}"
        )));
    }
    Ok(TimeWindow {
        start: start_time,
        end: end_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: ErrorData) -> String {
        assert_eq!(error.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        error.message.into_owned()
    }

    #[test]
    fn hashes_are_normalised_or_refused() {
        let (bytes, normalised) = hash("0xABcd").unwrap();
        assert_eq!(bytes, vec![0xab, 0xcd]);
        assert_eq!(normalised, "abcd");
        assert_eq!(hash("abcd").unwrap().1, "abcd");
        assert_eq!(
            message(hash("not-hex").unwrap_err()),
            "Invalid hash format: not-hex"
        );
        assert_eq!(message(hash("0x").unwrap_err()), "Missing hash value");
        assert!(message(hash(&"ab".repeat(100)).unwrap_err()).starts_with("Invalid hash format"));
    }

    #[test]
    fn addresses_keep_their_kind() {
        assert_eq!(address("0xABAB").unwrap(), "0xabab");
        assert_eq!(address("abab").unwrap(), "0xabab");
        let solana = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
        assert_eq!(address(solana).unwrap(), solana);
        assert_eq!(
            message(address("0x").unwrap_err()),
            "Invalid address format: empty address"
        );
        assert_eq!(
            message(address("0xzz").unwrap_err()),
            "Invalid address format: 0xzz"
        );
    }

    #[test]
    fn reaction_checks_use_the_compat_texts() {
        assert_eq!(
            message(reaction_type(9).unwrap_err()),
            "Invalid reaction type: 9 (expected 1=Like or 2=Recast)"
        );
        assert_eq!(reaction_type(2).unwrap(), ReactionType::Recast);
        assert_eq!(
            message(reaction_target(None, None, None).unwrap_err()),
            "Either target_url or both target_cast_fid and target_cast_hash are required"
        );
        assert!(reaction_target(Some(1), None, None).is_err());
        // The URL wins, even over a cast that would not parse.
        assert_eq!(
            reaction_target(Some(1), Some("nothex"), Some("https://example.com")).unwrap(),
            CastTarget::Url {
                url: "https://example.com".into()
            }
        );
        assert_eq!(
            reaction_target(Some(1), Some("0xAA"), None).unwrap(),
            CastTarget::Cast {
                fid: 1,
                hash: "aa".into()
            }
        );
    }

    #[test]
    fn fids_limits_and_windows() {
        assert!(message(fid("fid", 0).unwrap_err()).starts_with("Invalid fid: 0"));
        assert_eq!(fid("fid", 3).unwrap(), 3);
        assert!(page(0).is_err());
        assert!(page(MAX_PAGE_SIZE + 1).is_err());
        assert_eq!(page(10).unwrap().limit, 10);
        assert!(window(Some(5), Some(4)).is_err());
        assert!(window(Some(4), None).is_ok());
        assert!(page_after(10, Some("garbage!")).is_err());
    }

    #[test]
    fn conversation_fids_may_be_strings() {
        let args: ConversationArgs =
            serde_json::from_value(serde_json::json!({"fid": "12", "cast_hash": "0xab"})).unwrap();
        assert_eq!(args.fid, 12);
        assert!(!args.recursive);
        assert_eq!(args.max_depth, 5);
        assert_eq!(args.limit, 10);
        assert!(
            serde_json::from_value::<ConversationArgs>(
                serde_json::json!({"fid": "x", "cast_hash": "ab"})
            )
            .is_err()
        );
    }
}
