//! The `/api/v1` handlers: each reads its parameters ([`Args`]), asks the query layer, and
//! answers `{"data": ..., "source": ...}` (one item) or `{"data": [...], "next_cursor": ...,
//! "source": ...}` (a list). Each carries its OpenAPI description (`#[utoipa::path]`), so the
//! document is generated from the same place as the behaviour.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::App;
use super::error::{ApiError, Errors};
use super::params::Args;
use crate::query::{
    Answer, Cast, CastTarget, Conversation, Link, LinkCompactState, OnChainEvent, Page, Profile,
    Reaction, Source, UsernameProof, Verification,
};

/// One item and the source that answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Item<T> {
    pub data: T,
    pub source: Source,
}

/// One page of a list and the source that answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    pub source: Source,
}

/// A fid in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: parsed by `Args`
pub struct FidPath {
    /// A Farcaster id: a positive integer.
    #[param(minimum = 1)]
    fid: u64,
}

/// A cast's fid and hash in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: parsed by `Args`
pub struct CastPath {
    /// The author's fid: a positive integer.
    #[param(minimum = 1)]
    fid: u64,
    /// The cast's hash: 40 hex characters, with or without `0x`.
    #[param(pattern = "^(0[xX])?[0-9a-fA-F]{40}$")]
    hash: String,
}

/// A username in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: parsed by `Args`
pub struct NamePath {
    /// An fname or ENS name (case-insensitive).
    #[param(min_length = 1, max_length = 255)]
    name: String,
}

/// Paging of a list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only: parsed by `Args`
pub struct PageParams {
    /// Items per page: 1 to 1000, default 25.
    #[param(minimum = 1, maximum = 1000, default = 25)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Answers one item, or 404 naming what was looked for.
fn item<T: Serialize>(answer: Answer<Option<T>>, what: impl FnOnce() -> String) -> Response {
    match answer.value {
        Some(data) => axum::Json(Item {
            data,
            source: answer.source,
        })
        .into_response(),
        None => ApiError::NotFound(what()).into_response(),
    }
}

/// Answers one page of a list.
fn list<T: Serialize>(answer: Answer<Page<T>>) -> Response {
    axum::Json(List {
        data: answer.value.items,
        next_cursor: answer.value.next_cursor,
        source: answer.source,
    })
    .into_response()
}

/// Answers a whole (short) list.
fn all<T: Serialize>(answer: Answer<Vec<T>>) -> Response {
    axum::Json(List {
        data: answer.value,
        next_cursor: None,
        source: answer.source,
    })
    .into_response()
}

const PAGE: &[&str] = &["limit", "cursor"];

/// A profile by fid: user data, username proofs, follower and following counts.
#[utoipa::path(get, path = "/api/v1/users/{fid}", tag = "users", params(FidPath),
    responses((status = 200, description = "The profile", body = Item<Profile>), Errors))]
pub async fn user(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let fid = args.only(&[])?.fid("fid")?;
    let answer = app.data.profile(fid).await?;
    Ok(item(answer, || format!("no profile for fid {fid}")))
}

/// A profile by username (fname or ENS name).
#[utoipa::path(get, path = "/api/v1/users/by-username/{name}", tag = "users", params(NamePath),
    responses((status = 200, description = "The profile", body = Item<Profile>), Errors))]
pub async fn user_by_username(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let name = args.only(&[])?.name("name")?;
    let answer = app.data.profile_by_username(name.clone()).await?;
    Ok(item(answer, || format!("no user named {name:?}")))
}

/// A fid's live verified addresses, newest first.
#[utoipa::path(get, path = "/api/v1/verifications/{fid}", tag = "verifications",
    params(FidPath, PageParams),
    responses((status = 200, description = "A page of verifications", body = List<Verification>), Errors))]
pub async fn verifications(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(PAGE)?;
    let fid = args.fid("fid")?;
    let page = args.page()?;
    Ok(list(app.data.verifications_by_fid(fid, page).await?))
}

/// One live verification of a fid by address.
#[utoipa::path(get, path = "/api/v1/verifications/{fid}/{address}", tag = "verifications",
    params(FidPath,
        ("address" = String, Path, description = "`0x` and 40 hex characters (Ethereum), or base58 (Solana)")),
    responses((status = 200, description = "The verification", body = Item<Verification>), Errors))]
pub async fn verification(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&[])?;
    let fid = args.fid("fid")?;
    let address = args.address("address")?;
    let answer = app.data.verification(fid, address.clone()).await?;
    Ok(item(answer, || {
        format!("fid {fid} has no live verification of {address}")
    }))
}

/// A live cast.
#[utoipa::path(get, path = "/api/v1/casts/{fid}/{hash}", tag = "casts", params(CastPath),
    responses((status = 200, description = "The cast", body = Item<Cast>), Errors))]
pub async fn cast(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&[])?;
    let fid = args.fid("fid")?;
    let hash = args.hash("hash")?;
    let hex_hash = hex::encode(&hash);
    let answer = app.data.cast(fid, hash).await?;
    Ok(item(answer, || {
        format!("no live cast {hex_hash} by fid {fid}")
    }))
}

/// A fid's live casts, newest first; with `start_time` and/or `end_time`, only those in the
/// window.
#[utoipa::path(get, path = "/api/v1/casts/by-fid/{fid}", tag = "casts",
    params(FidPath, PageParams,
        ("start_time" = Option<u64>, Query, description = "Only casts at or after this time, Unix seconds"),
        ("end_time" = Option<u64>, Query, description = "Only casts at or before this time, Unix seconds")),
    responses((status = 200, description = "A page of casts", body = List<Cast>), Errors))]
pub async fn casts_by_fid(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&["limit", "cursor", "start_time", "end_time"])?;
    let fid = args.fid("fid")?;
    let page = args.page()?;
    let answer = match args.window()? {
        Some(window) => app.data.casts_by_fid_in_window(fid, window, page).await?,
        None => app.data.casts_by_fid(fid, page).await?,
    };
    Ok(list(answer))
}

/// Live casts that mention a fid, newest first.
#[utoipa::path(get, path = "/api/v1/casts/by-mention/{fid}", tag = "casts",
    params(FidPath, PageParams),
    responses((status = 200, description = "A page of casts", body = List<Cast>), Errors))]
pub async fn casts_by_mention(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(PAGE)?;
    let fid = args.fid("fid")?;
    let page = args.page()?;
    Ok(list(app.data.casts_by_mention(fid, page).await?))
}

/// Live replies to a cast, newest first.
#[utoipa::path(get, path = "/api/v1/casts/by-parent/{fid}/{hash}", tag = "casts",
    params(CastPath, PageParams),
    responses((status = 200, description = "A page of replies", body = List<Cast>), Errors))]
pub async fn casts_by_parent(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(PAGE)?;
    let fid = args.fid("fid")?;
    let hash = args.hash("hash")?;
    let page = args.page()?;
    Ok(list(app.data.casts_by_parent(fid, hash, page).await?))
}

/// Live casts whose parent is a URL (a channel, a web page), newest first.
#[utoipa::path(get, path = "/api/v1/casts/by-parent-url", tag = "casts",
    params(("url" = String, Query, description = "The parent URL, percent-encoded", min_length = 1, max_length = 1024),
        PageParams),
    responses((status = 200, description = "A page of casts", body = List<Cast>), Errors))]
pub async fn casts_by_parent_url(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&["url", "limit", "cursor"])?;
    let url = args.url("url")?;
    let page = args.page()?;
    Ok(list(app.data.casts_by_parent_url(url, page).await?))
}

/// Full-text search over live casts' text, best match first (database only).
#[utoipa::path(get, path = "/api/v1/casts/search", tag = "casts",
    params(("q" = String, Query, description = "Words to search for: 1 to 256 characters", min_length = 1, max_length = 256),
        PageParams),
    responses((status = 200, description = "A page of matching casts", body = List<Cast>), Errors))]
pub async fn casts_search(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&["q", "limit", "cursor"])?;
    let text = args.search_text("q")?;
    let page = args.page()?;
    Ok(list(app.data.search_casts(text, page).await?))
}

/// A cast in its context: ancestors, quoted casts, replies (recursively when asked) and the
/// participants' profiles.
#[utoipa::path(get, path = "/api/v1/conversations/{fid}/{hash}", tag = "casts",
    params(CastPath,
        ("recursive" = Option<bool>, Query, description = "Read replies of replies, default false"),
        ("max_depth" = Option<u32>, Query, description = "Levels of replies read when recursive: 1 to 10, default 5", minimum = 1, maximum = 10),
        ("limit" = Option<u32>, Query, description = "Replies read per cast: 1 to 1000, default 10", minimum = 1, maximum = 1000)),
    responses((status = 200, description = "The conversation", body = Item<Conversation>), Errors))]
pub async fn conversation(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&["recursive", "max_depth", "limit"])?;
    let fid = args.fid("fid")?;
    let hash = args.hash("hash")?;
    let request = args.conversation()?;
    let hex_hash = hex::encode(&hash);
    let answer = app.data.conversation(fid, hash, request).await?;
    Ok(item(answer, || {
        format!("no live cast {hex_hash} by fid {fid}")
    }))
}

/// A reaction type filter.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only: parsed by `Args`
pub struct ReactionTypeParam {
    /// `like` (or 1) or `recast` (or 2); every type when absent.
    #[param(pattern = "^(like|recast|1|2)$")]
    reaction_type: Option<String>,
}

/// A fid's live reactions, newest first.
#[utoipa::path(get, path = "/api/v1/reactions/by-fid/{fid}", tag = "reactions",
    params(FidPath, ReactionTypeParam, PageParams),
    responses((status = 200, description = "A page of reactions", body = List<Reaction>), Errors))]
pub async fn reactions_by_fid(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&["reaction_type", "limit", "cursor"])?;
    let fid = args.fid("fid")?;
    let reaction_type = args.reaction_type()?;
    let page = args.page()?;
    Ok(list(
        app.data.reactions_by_fid(fid, reaction_type, page).await?,
    ))
}

/// Live reactions to a cast, newest first.
#[utoipa::path(get, path = "/api/v1/reactions/by-target-cast/{fid}/{hash}", tag = "reactions",
    params(CastPath, ReactionTypeParam, PageParams),
    responses((status = 200, description = "A page of reactions", body = List<Reaction>), Errors))]
pub async fn reactions_by_target_cast(
    State(app): State<App>,
    args: Args,
) -> Result<Response, ApiError> {
    let args = args.only(&["reaction_type", "limit", "cursor"])?;
    let fid = args.fid("fid")?;
    let hash = hex::encode(args.hash("hash")?);
    let reaction_type = args.reaction_type()?;
    let page = args.page()?;
    let target = CastTarget::Cast { fid, hash };
    Ok(list(
        app.data
            .reactions_by_target(target, reaction_type, page)
            .await?,
    ))
}

/// Live reactions to a URL, newest first.
#[utoipa::path(get, path = "/api/v1/reactions/by-target-url", tag = "reactions",
    params(("url" = String, Query, description = "The target URL, percent-encoded", min_length = 1, max_length = 1024),
        ReactionTypeParam, PageParams),
    responses((status = 200, description = "A page of reactions", body = List<Reaction>), Errors))]
pub async fn reactions_by_target_url(
    State(app): State<App>,
    args: Args,
) -> Result<Response, ApiError> {
    let args = args.only(&["url", "reaction_type", "limit", "cursor"])?;
    let url = args.url("url")?;
    let reaction_type = args.reaction_type()?;
    let page = args.page()?;
    let target = CastTarget::Url { url };
    Ok(list(
        app.data
            .reactions_by_target(target, reaction_type, page)
            .await?,
    ))
}

/// A link type filter.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only: parsed by `Args`
pub struct LinkTypeParam {
    /// A link type such as `follow`, or `any` (the default) for every type.
    #[param(pattern = "^[A-Za-z0-9_-]{1,8}$")]
    link_type: Option<String>,
}

/// A fid's live links (whom it follows), newest first.
#[utoipa::path(get, path = "/api/v1/links/by-fid/{fid}", tag = "links",
    params(FidPath, LinkTypeParam, PageParams),
    responses((status = 200, description = "A page of links", body = List<Link>), Errors))]
pub async fn links_by_fid(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&["link_type", "limit", "cursor"])?;
    let fid = args.fid("fid")?;
    let link_type = args.link_type()?;
    let page = args.page()?;
    Ok(list(app.data.links_by_fid(fid, link_type, page).await?))
}

/// Live links to a fid (its followers), newest first.
#[utoipa::path(get, path = "/api/v1/links/by-target/{fid}", tag = "links",
    params(FidPath, LinkTypeParam, PageParams),
    responses((status = 200, description = "A page of links", body = List<Link>), Errors))]
pub async fn links_by_target(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&["link_type", "limit", "cursor"])?;
    let fid = args.fid("fid")?;
    let link_type = args.link_type()?;
    let page = args.page()?;
    Ok(list(app.data.links_by_target(fid, link_type, page).await?))
}

/// A fid's link compact states (one per link type it compacted); `next_cursor` is always null.
#[utoipa::path(get, path = "/api/v1/links/compact-state/{fid}", tag = "links", params(FidPath),
    responses((status = 200, description = "The compact states", body = List<LinkCompactState>), Errors))]
pub async fn link_compact_state(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let fid = args.only(&[])?.fid("fid")?;
    Ok(all(app.data.link_compact_state(fid).await?))
}

/// A fid's live username proofs, by name; `next_cursor` is always null.
#[utoipa::path(get, path = "/api/v1/username-proofs/{fid}", tag = "username-proofs",
    params(FidPath),
    responses((status = 200, description = "The proofs", body = List<UsernameProof>), Errors))]
pub async fn username_proofs(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let fid = args.only(&[])?.fid("fid")?;
    Ok(all(app.data.username_proofs_by_fid(fid).await?))
}

/// The live proof of a name.
#[utoipa::path(get, path = "/api/v1/username-proofs/by-name/{name}", tag = "username-proofs",
    params(NamePath),
    responses((status = 200, description = "The proof", body = Item<UsernameProof>), Errors))]
pub async fn username_proof(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let name = args.only(&[])?.name("name")?;
    let answer = app.data.username_proof(name.clone()).await?;
    Ok(item(answer, || format!("no username proof for {name:?}")))
}

/// A fid's on-chain events, newest first.
#[utoipa::path(get, path = "/api/v1/onchain-events/{fid}", tag = "onchain-events",
    params(FidPath,
        ("event_type" = Option<String>, Query,
            description = "signer (1), signer_migrated (2), id_register (3), storage_rent (4) or tier_purchase (5), by name or number; every type when absent"),
        PageParams),
    responses((status = 200, description = "A page of on-chain events", body = List<OnChainEvent>), Errors))]
pub async fn onchain_events(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(&["event_type", "limit", "cursor"])?;
    let fid = args.fid("fid")?;
    let event_type = args.event_type()?;
    let page = args.page()?;
    Ok(list(app.data.onchain_events(fid, event_type, page).await?))
}

/// The newest live casts of the accounts a fid follows (database only).
#[utoipa::path(get, path = "/api/v1/feed/following/{fid}", tag = "casts",
    params(FidPath, PageParams),
    responses((status = 200, description = "A page of casts", body = List<Cast>), Errors))]
pub async fn following_feed(State(app): State<App>, args: Args) -> Result<Response, ApiError> {
    let args = args.only(PAGE)?;
    let fid = args.fid("fid")?;
    let page = args.page()?;
    Ok(list(app.data.following_feed(fid, page).await?))
}
