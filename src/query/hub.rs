//! The hub side of the query layer: every query answered from the hub's gRPC reads, in the
//! shapes of `model`.
//!
//! Invariants:
//! - One answer, whichever source gives it. A hub message becomes an item through the rows
//!   the database would store for it (`store::rows::Batch`), then through the conversions
//!   both sources share (`model`), so a field cannot read differently here and there.
//! - Lists come newest first by (timestamp, hash). Per-fid lists are read with
//!   `reverse: true`. Lists that span every shard (by mention, by parent, by target) are
//!   answered by the node as one page per shard, concatenated; they are merged here (see
//!   [`HubReader::cross_shard_list`]) so they keep the same order.
//! - A page's cursor holds the hub's page token and the position of the page's end, so the
//!   database can continue a walk the hub began. A cursor without a hub token is the
//!   database's: [`SourceError::CursorElsewhere`].
//! - One hub call per page as a rule, each under the query deadline and never retried: an
//!   API caller must not wait for retries when the database can answer instead.
//! - `NOT_FOUND` is an answer (`None`, an empty page); every other failure is an error.

use std::future::Future;
use std::time::Duration;

use waypoint_proto::{
    CastId, CastsByParentRequest, FidTimestampRequest, LinkRequest, LinksByFidRequest,
    LinksByTargetRequest, Message, MessagesResponse, ReactionRequest, ReactionsByFidRequest,
    ReactionsByTargetRequest, UserNameProof, VerificationRequest, casts_by_parent_request,
    link_request, links_by_target_request, reaction_request, reactions_by_target_request,
};

use super::SourceError;
use super::cursor::{Cursor, Position};
use super::model::*;
use crate::config::{HubConfig, QueryConfig};
use crate::hub::{Client, FidMessages, HubError, ids, verify};
use crate::replica::EmbedRow;
use crate::store::rows::{
    Batch, CastRow, CompactStateRow, LinkRow, OnchainRow, ProofRow, ReactionRow, UserDataRow,
    VerificationRow,
};
use crate::store::state::{embeds_from_json, numbers};

/// On-chain event types read when none is asked for: every type a fid's events can have
/// (SIGNER, SIGNER_MIGRATED, ID_REGISTER, STORAGE_RENT, TIER_PURCHASE).
const ONCHAIN_EVENT_TYPES: [i32; 5] = [1, 2, 3, 4, 5];

/// The largest `OnChainEventType` number (CHANNEL_REGISTER).
const MAX_ONCHAIN_EVENT_TYPE: i32 = 6;

/// Page size of the calls that read a whole list (user data, compact states): the node's
/// own maximum page.
const WHOLE_LIST_PAGE_SIZE: u32 = 1000;

/// Hub pages one list page may read to fill up when the hub's pages hold messages that are
/// not items (the removes of `GetAll*`): bounded, so one request costs at most this many
/// deadlines.
const MAX_HUB_PAGES_PER_PAGE: usize = 4;

/// Reads from the hub; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct HubReader {
    pub client: Client,
}

/// A list position as both sources order lists: (timestamp, hash hex), newest first.
type SortKey = (u64, String);

impl HubReader {
    /// A reader with its own client: `hub.*` settings, but the query deadline
    /// (`query.hub_timeout_ms`) and no retries. The client connects lazily and again after a
    /// failure, so a hub that is down when this is built is picked up when it comes back.
    pub fn new(hub: &HubConfig, query: &QueryConfig) -> Result<HubReader, HubError> {
        let mut options = crate::hub::options_from_config(hub);
        let deadline = Duration::from_millis(query.hub_timeout_ms.max(1));
        options.request_timeout = deadline;
        options.connect_timeout = options.connect_timeout.min(deadline);
        options.retry.max_attempts = 1;
        Ok(HubReader {
            client: Client::new(options)?,
        })
    }

    pub async fn profile(&self, fid: u64) -> Result<Option<Profile>, SourceError> {
        let (user_data, proofs) =
            tokio::try_join!(self.user_data_values(fid), self.username_proofs_by_fid(fid))?;
        Ok(Profile::from_parts(fid, user_data, proofs))
    }

    pub async fn fid_by_username(&self, name: String) -> Result<Option<u64>, SourceError> {
        Ok(self.username_proof(name).await?.map(|proof| proof.fid))
    }

    pub async fn cast(&self, fid: u64, hash: Vec<u8>) -> Result<Option<Cast>, SourceError> {
        let message = found(self.client.get_cast(fid, hash).await)?;
        Ok(message.as_ref().and_then(cast_of))
    }

    pub async fn casts_by_fid(
        &self,
        fid: u64,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        self.fid_messages(FidMessages::Casts, fid, None, page, cast_of)
            .await
    }

    pub async fn casts_by_mention(
        &self,
        fid: u64,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let client = &self.client;
        let call = |page_size, page_token| async move {
            let request = FidTimestampRequest {
                fid,
                page_size: Some(page_size),
                page_token,
                reverse: Some(true),
                start_timestamp: None,
                stop_timestamp: None,
            };
            client
                .fid_messages_page_with(FidMessages::CastsByMention, request)
                .await
        };
        self.cross_shard_list("GetCastsByMention", page, call, cast_of)
            .await
    }

    pub async fn casts_by_parent(
        &self,
        fid: u64,
        hash: Vec<u8>,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let parent = casts_by_parent_request::Parent::ParentCastId(CastId { fid, hash });
        self.casts_by_parent_of(parent, page).await
    }

    pub async fn casts_by_parent_url(
        &self,
        url: String,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let parent = casts_by_parent_request::Parent::ParentUrl(url);
        self.casts_by_parent_of(parent, page).await
    }

    pub async fn casts_by_fid_in_window(
        &self,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        self.in_window(FidMessages::AllCasts, fid, window, page, cast_of)
            .await
    }

    pub async fn reaction(
        &self,
        fid: u64,
        reaction_type: ReactionType,
        target: CastTarget,
    ) -> Result<Option<Reaction>, SourceError> {
        let target = match target {
            CastTarget::Cast { fid, hash } => match hex::decode(&hash) {
                Ok(hash) => reaction_request::Target::TargetCastId(CastId { fid, hash }),
                // No reaction targets a cast whose hash is not hex.
                Err(_) => return Ok(None),
            },
            CastTarget::Url { url } => reaction_request::Target::TargetUrl(url),
        };
        let request = ReactionRequest {
            fid,
            reaction_type: reaction_type.id(),
            target: Some(target),
        };
        let message = found(self.client.get_reaction(request).await)?;
        Ok(message.as_ref().and_then(reaction_of))
    }

    pub async fn reactions_by_fid(
        &self,
        fid: u64,
        reaction_type: Option<ReactionType>,
        page: PageRequest,
    ) -> Result<Page<Reaction>, SourceError> {
        let client = &self.client;
        let call = |page_size, page_token| async move {
            let request = ReactionsByFidRequest {
                fid,
                reaction_type: reaction_type.map(ReactionType::id),
                page_size: Some(page_size),
                page_token,
                reverse: Some(true),
            };
            client.reactions_by_fid(request).await
        };
        self.fid_list("GetReactionsByFid", page, call, reaction_of)
            .await
    }

    pub async fn reactions_by_target(
        &self,
        target: CastTarget,
        reaction_type: Option<ReactionType>,
        page: PageRequest,
    ) -> Result<Page<Reaction>, SourceError> {
        let target = match target {
            CastTarget::Cast { fid, hash } => match hex::decode(&hash) {
                Ok(hash) => reactions_by_target_request::Target::TargetCastId(CastId { fid, hash }),
                Err(_) => return Ok(empty_page()),
            },
            CastTarget::Url { url } => reactions_by_target_request::Target::TargetUrl(url),
        };
        let client = &self.client;
        let call = |page_size, page_token| {
            let target = target.clone();
            async move {
                let request = ReactionsByTargetRequest {
                    target: Some(target),
                    reaction_type: reaction_type.map(ReactionType::id),
                    page_size: Some(page_size),
                    page_token,
                    reverse: Some(true),
                };
                client.reactions_by_target(request).await
            }
        };
        self.cross_shard_list("GetReactionsByTarget", page, call, reaction_of)
            .await
    }

    pub async fn reactions_by_fid_in_window(
        &self,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Reaction>, SourceError> {
        self.in_window(FidMessages::AllReactions, fid, window, page, reaction_of)
            .await
    }

    pub async fn link(
        &self,
        fid: u64,
        link_type: String,
        target_fid: u64,
    ) -> Result<Option<Link>, SourceError> {
        let request = LinkRequest {
            fid,
            link_type,
            target: Some(link_request::Target::TargetFid(target_fid)),
        };
        let message = found(self.client.get_link(request).await)?;
        Ok(message.as_ref().and_then(link_of))
    }

    pub async fn links_by_fid(
        &self,
        fid: u64,
        link_type: Option<String>,
        page: PageRequest,
    ) -> Result<Page<Link>, SourceError> {
        let client = &self.client;
        let call = |page_size, page_token| {
            let link_type = link_type.clone();
            async move {
                let request = LinksByFidRequest {
                    fid,
                    link_type,
                    page_size: Some(page_size),
                    page_token,
                    reverse: Some(true),
                };
                client.links_by_fid(request).await
            }
        };
        self.fid_list("GetLinksByFid", page, call, link_of).await
    }

    pub async fn links_by_target(
        &self,
        target_fid: u64,
        link_type: Option<String>,
        page: PageRequest,
    ) -> Result<Page<Link>, SourceError> {
        let client = &self.client;
        let call = |page_size, page_token| {
            // The node requires a type; an empty one means every type.
            let link_type = link_type.clone().unwrap_or_default();
            async move {
                let request = LinksByTargetRequest {
                    target: Some(links_by_target_request::Target::TargetFid(target_fid)),
                    link_type: Some(link_type),
                    page_size: Some(page_size),
                    page_token,
                    reverse: Some(true),
                };
                client.links_by_target(request).await
            }
        };
        self.cross_shard_list("GetLinksByTarget", page, call, link_of)
            .await
    }

    pub async fn links_by_fid_in_window(
        &self,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Link>, SourceError> {
        self.in_window(FidMessages::AllLinks, fid, window, page, link_of)
            .await
    }

    pub async fn link_compact_state(&self, fid: u64) -> Result<Vec<LinkCompactState>, SourceError> {
        let messages = found(
            self.client
                .fid_messages(FidMessages::LinkCompactState, fid, WHOLE_LIST_PAGE_SIZE)
                .await,
        )?
        .unwrap_or_default();
        let mut states: Vec<LinkCompactState> = messages
            .iter()
            .filter_map(|message| {
                rows_of(message)
                    .compact_states
                    .pop()
                    .map(compact_state_item)
            })
            .collect();
        states.sort_by(|a, b| {
            (&a.link_type, std::cmp::Reverse(a.timestamp), &a.hash).cmp(&(
                &b.link_type,
                std::cmp::Reverse(b.timestamp),
                &b.hash,
            ))
        });
        Ok(states)
    }

    pub async fn verifications_by_fid(
        &self,
        fid: u64,
        page: PageRequest,
    ) -> Result<Page<Verification>, SourceError> {
        self.fid_messages(FidMessages::Verifications, fid, None, page, verification_of)
            .await
    }

    pub async fn verification(
        &self,
        fid: u64,
        address: String,
    ) -> Result<Option<Verification>, SourceError> {
        // An address that is neither hex nor base58 is no fid's verified address.
        let Some(address) = parse_verification_address(&address) else {
            return Ok(None);
        };
        let request = VerificationRequest { fid, address };
        let message = found(self.client.get_verification(request).await)?;
        Ok(message.as_ref().and_then(verification_of))
    }

    pub async fn verifications_by_fid_in_window(
        &self,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Verification>, SourceError> {
        self.in_window(
            FidMessages::AllVerifications,
            fid,
            window,
            page,
            verification_of,
        )
        .await
    }

    pub async fn username_proofs_by_fid(
        &self,
        fid: u64,
    ) -> Result<Vec<UsernameProof>, SourceError> {
        let proofs = found(self.client.username_proofs(fid).await)?.unwrap_or_default();
        let mut proofs: Vec<UsernameProof> = proofs.iter().map(username_proof_of).collect();
        proofs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(proofs)
    }

    pub async fn username_proof(&self, name: String) -> Result<Option<UsernameProof>, SourceError> {
        // Names are lowercase (as the database finds them in any case).
        let name = name.to_lowercase();
        let proof = found(self.client.username_proof(name.into_bytes()).await)?;
        Ok(proof.as_ref().map(username_proof_of))
    }

    /// The node answers every event of a type at once (it ignores paging), so the events
    /// are merged, ordered and paged here by position: newest first by
    /// (block_number, log_index), a page's position `block_number:log_index`. The cursor's
    /// hub token is empty (the node has none for this list).
    pub async fn onchain_events(
        &self,
        fid: u64,
        event_type: Option<i32>,
        page: PageRequest,
    ) -> Result<Page<OnChainEvent>, SourceError> {
        let after = match &page.cursor {
            None => None,
            Some(cursor) if cursor.hub_token.is_none() => {
                return Err(SourceError::CursorElsewhere);
            }
            Some(cursor) => match &cursor.after {
                None => None,
                Some(position) => Some(onchain_key_of(&position.key).ok_or_else(|| {
                    SourceError::BadAnswer(format!(
                        "GetOnChainEvents: the cursor's position {:?} is not block_number:log_index",
                        position.key
                    ))
                })?),
            },
        };
        let types: Vec<i32> = match event_type {
            // A type the protocol does not define has no events (the node would refuse it).
            Some(event_type) if !(0..=MAX_ONCHAIN_EVENT_TYPE).contains(&event_type) => {
                return Ok(empty_page());
            }
            Some(event_type) => vec![event_type],
            None => ONCHAIN_EVENT_TYPES.to_vec(),
        };
        let reads = types
            .iter()
            .map(|event_type| self.client.onchain_events(fid, *event_type));
        let mut events: Vec<OnChainEvent> = Vec::new();
        for response in futures::future::join_all(reads).await {
            let Some(response) = found(response)? else {
                continue;
            };
            for event in &response.events {
                let mut batch = Batch::default();
                batch.add_onchain_event(event);
                events.extend(batch.onchain.pop().map(onchain_item));
            }
        }
        events.sort_by(|a, b| onchain_order(b).cmp(&onchain_order(a)));
        events.dedup_by(|a, b| onchain_order(a) == onchain_order(b));
        let limit = page_limit(&page);
        let mut remaining = events.into_iter().filter(|event| {
            after.is_none_or(|after| (event.block_number, event.log_index) < after)
        });
        let items: Vec<OnChainEvent> = remaining.by_ref().take(limit).collect();
        let next_cursor = match (remaining.next(), items.last()) {
            (Some(_), Some(last)) => Some(
                Cursor {
                    hub_token: Some(String::new()),
                    after: Some(Position {
                        timestamp: last.block_timestamp,
                        key: format!("{}:{}", last.block_number, last.log_index),
                    }),
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }
}

/// How lists are read.
impl HubReader {
    /// Every live user data value of a fid.
    async fn user_data_values(&self, fid: u64) -> Result<Vec<UserDataValue>, SourceError> {
        let messages = found(
            self.client
                .fid_messages(FidMessages::UserData, fid, WHOLE_LIST_PAGE_SIZE)
                .await,
        )?
        .unwrap_or_default();
        Ok(messages
            .iter()
            .filter_map(|message| rows_of(message).user_data.pop().map(user_data_item))
            .collect())
    }

    async fn casts_by_parent_of(
        &self,
        parent: casts_by_parent_request::Parent,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let client = &self.client;
        let call = |page_size, page_token| {
            let parent = parent.clone();
            async move {
                let request = CastsByParentRequest {
                    parent: Some(parent),
                    page_size: Some(page_size),
                    page_token,
                    reverse: Some(true),
                };
                client.casts_by_parent(request).await
            }
        };
        self.cross_shard_list("GetCastsByParent", page, call, cast_of)
            .await
    }

    /// The adds of a `GetAll*MessagesByFid` list with timestamps in the window.
    async fn in_window<T>(
        &self,
        list: FidMessages,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
        item: impl Fn(&Message) -> Option<T>,
    ) -> Result<Page<T>, SourceError> {
        match farcaster_window(window) {
            Some(bounds) => self.fid_messages(list, fid, Some(bounds), page, item).await,
            None => {
                check_cursor(&page)?;
                Ok(empty_page())
            }
        }
    }

    /// A per-fid list of `Client::fid_messages_page_with`.
    async fn fid_messages<T>(
        &self,
        list: FidMessages,
        fid: u64,
        bounds: Option<(Option<u64>, Option<u64>)>,
        page: PageRequest,
        item: impl Fn(&Message) -> Option<T>,
    ) -> Result<Page<T>, SourceError> {
        let client = &self.client;
        let (start_timestamp, stop_timestamp) = bounds.unwrap_or_default();
        let call = |page_size, page_token| async move {
            let request = FidTimestampRequest {
                fid,
                page_size: Some(page_size),
                page_token,
                reverse: Some(true),
                start_timestamp,
                stop_timestamp,
            };
            client.fid_messages_page_with(list, request).await
        };
        self.fid_list(list.method(), page, call, item).await
    }

    /// One page of a list the hub orders itself (one fid's messages, newest first): hub
    /// pages from the cursor's token until `limit` items are read, the list ends, or
    /// [`MAX_HUB_PAGES_PER_PAGE`] pages were read (pages of `GetAll*` also hold removes,
    /// which are no items). Each further hub page asks only for what is missing, so the hub's
    /// token always points at the end of what this page returns.
    async fn fid_list<T, F, Fut>(
        &self,
        method: &'static str,
        page: PageRequest,
        call: F,
        item: impl Fn(&Message) -> Option<T>,
    ) -> Result<Page<T>, SourceError>
    where
        F: Fn(u32, Option<Vec<u8>>) -> Fut,
        Fut: Future<Output = Result<MessagesResponse, HubError>>,
    {
        let mut token = check_cursor(&page)?;
        let mut after: Option<SortKey> = page
            .cursor
            .as_ref()
            .and_then(|cursor| cursor.after.as_ref())
            .map(|position| (position.timestamp, position.key.clone()));
        let limit = page_limit(&page);
        let mut items = Vec::new();
        for _ in 0..MAX_HUB_PAGES_PER_PAGE {
            let wanted = (limit - items.len()) as u32;
            let Some(response) = found(call(wanted, token.clone()).await)? else {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            };
            for message in &response.messages {
                let Some(key) = sort_key(message) else {
                    tracing::debug!(method, "hub message without readable data skipped");
                    continue;
                };
                // A page never goes back to what an earlier page returned (the token says
                // where it ends; the position makes sure).
                if after.as_ref().is_some_and(|after| key >= *after) {
                    continue;
                }
                items.extend(item(message));
                after = Some(key);
            }
            match Client::next_page_token(response.next_page_token, token.as_deref(), method)? {
                Some(next) => token = Some(next),
                None => {
                    return Ok(Page {
                        items,
                        next_cursor: None,
                    });
                }
            }
            if items.len() >= limit {
                break;
            }
        }
        Ok(Page {
            items,
            next_cursor: Some(cursor_text(token.as_deref(), after)),
        })
    }

    /// One page of a list that spans every shard (`GetCastsByMention`, `GetCastsByParent`,
    /// `GetReactionsByTarget`, `GetLinksByTarget`), newest first over all shards.
    ///
    /// The node answers such a list with one page per shard, concatenated (each newest
    /// first), and a JSON array with one token per shard slot (null: that shard's list is
    /// over; a null sent back starts the shard again). Its order is therefore not the list's
    /// order, so this page is merged here:
    /// - a shard whose page filled up may hold older messages than its page's last one,
    ///   which the token names (its storage key contains the message's timestamp and hash);
    ///   the *frontier* is the newest of those last messages. Only messages at or above the
    ///   frontier are certainly newer than everything not read yet, so only they are
    ///   returned, newest first, up to `limit`;
    /// - a shard whose whole page was returned moves on to its next token; any other shard is
    ///   read again from the same token next time, and what was returned already is left out
    ///   by position (every message returned is newer than the page's position, every one not
    ///   returned older).
    ///
    /// Each page returns at least one message or moves a shard on, so a walk ends.
    async fn cross_shard_list<T, F, Fut>(
        &self,
        method: &'static str,
        page: PageRequest,
        call: F,
        item: impl Fn(&Message) -> Option<T>,
    ) -> Result<Page<T>, SourceError>
    where
        F: Fn(u32, Option<Vec<u8>>) -> Fut,
        Fut: Future<Output = Result<MessagesResponse, HubError>>,
    {
        // An empty token: the node's answer had no per-shard tokens (every shard was done),
        // so the list is read again from the start and what was returned is left out.
        let sent_token = check_cursor(&page)?.filter(|token| !token.is_empty());
        let sent: Option<Vec<Option<Vec<u8>>>> = match &sent_token {
            None => None,
            Some(token) => Some(serde_json::from_slice(token).map_err(|_| {
                SourceError::BadAnswer(format!(
                    "{method}: the cursor's page token is not a per-shard token"
                ))
            })?),
        };
        let after: Option<SortKey> = page
            .cursor
            .as_ref()
            .and_then(|cursor| cursor.after.as_ref())
            .map(|position| (position.timestamp, position.key.clone()));
        let limit = page_limit(&page);

        let Some(response) = found(call(limit as u32, sent_token.clone()).await)? else {
            return Ok(empty_page());
        };
        let next: Vec<Option<Vec<u8>>> = match response.next_page_token.as_deref() {
            None | Some([]) => Vec::new(),
            Some(token) => serde_json::from_slice(token).map_err(|_| {
                SourceError::BadAnswer(format!(
                    "{method}: the next page token is not a JSON array of per-shard tokens"
                ))
            })?,
        };
        let num_slots = next.len().max(sent.as_ref().map_or(0, Vec::len));
        let sent: Vec<Option<Vec<u8>>> = sent.unwrap_or_else(|| vec![None; num_slots]);
        if sent.len() != num_slots || (!next.is_empty() && next.len() != num_slots) {
            return Err(SourceError::BadAnswer(format!(
                "{method}: the hub answered {} shard tokens to {}",
                next.len(),
                sent.len()
            )));
        }

        // Every message of the answer not returned yet, newest first.
        let mut messages: Vec<(SortKey, &Message)> = response
            .messages
            .iter()
            .filter_map(|message| sort_key(message).map(|key| (key, message)))
            .filter(|(key, _)| after.as_ref().is_none_or(|after| key < after))
            .collect();
        messages.sort_by(|a, b| b.0.cmp(&a.0));
        messages.dedup_by(|a, b| a.0 == b.0);

        // The last message of each shard page that filled up.
        let mut lasts: Vec<Option<SortKey>> = vec![None; num_slots];
        for (slot, token) in next.iter().enumerate() {
            let Some(token) = token.as_deref().filter(|token| !token.is_empty()) else {
                continue;
            };
            let last = response
                .messages
                .iter()
                .find(|message| contains(token, &message.hash))
                .and_then(sort_key)
                .ok_or_else(|| {
                    SourceError::BadAnswer(format!(
                        "{method}: a shard's page token names none of the page's messages, so the shards cannot be merged in order"
                    ))
                })?;
            lasts[slot] = Some(last);
        }
        let frontier = lasts.iter().flatten().max().cloned();
        let eligible = messages
            .iter()
            .take_while(|(key, _)| frontier.as_ref().is_none_or(|frontier| key >= frontier))
            .count();
        let returned = &messages[..eligible.min(limit)];
        let new_after = returned.last().map(|(key, _)| key.clone()).or(after);
        let items: Vec<T> = returned
            .iter()
            .filter_map(|(_, message)| {
                let value = item(message);
                if value.is_none() {
                    tracing::debug!(method, "hub message that is no item skipped");
                }
                value
            })
            .collect();

        let more = lasts.iter().any(Option::is_some) || eligible > limit;
        if !more {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
        let tokens: Vec<Option<Vec<u8>>> = (0..num_slots)
            .map(|slot| match (&lasts[slot], &new_after) {
                (Some(last), Some(new_after)) if last >= new_after => next[slot].clone(),
                _ => sent[slot].clone(),
            })
            .collect();
        let token = if num_slots == 0 {
            Vec::new()
        } else {
            serde_json::to_vec(&tokens)
                .map_err(|error| SourceError::BadAnswer(format!("{method}: page token: {error}")))?
        };
        Ok(Page {
            items,
            next_cursor: Some(cursor_text(Some(&token), new_after)),
        })
    }
}

/// The hub token of a page request's cursor (`None` on the first page); a cursor without one
/// is the database's.
fn check_cursor(page: &PageRequest) -> Result<Option<Vec<u8>>, SourceError> {
    match &page.cursor {
        None => Ok(None),
        Some(cursor) => match cursor.hub_token_bytes() {
            Some(token) => Ok(Some(token)),
            None => Err(SourceError::CursorElsewhere),
        },
    }
}

fn page_limit(page: &PageRequest) -> usize {
    page.limit.clamp(1, MAX_PAGE_SIZE) as usize
}

fn empty_page<T>() -> Page<T> {
    Page {
        items: Vec::new(),
        next_cursor: None,
    }
}

fn cursor_text(token: Option<&[u8]>, after: Option<SortKey>) -> String {
    Cursor {
        hub_token: Some(token.map(hex::encode).unwrap_or_default()),
        after: after.map(|(timestamp, key)| Position { timestamp, key }),
    }
    .encode()
}

/// A hub answer, with NOT_FOUND as `None`.
fn found<T>(result: Result<T, HubError>) -> Result<Option<T>, SourceError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(HubError::Status {
            code: tonic::Code::NotFound,
            ..
        }) => Ok(None),
        Err(error) => Err(SourceError::Hub(error)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// The position of a message in the lists: (Farcaster timestamp, hash hex).
fn sort_key(message: &Message) -> Option<SortKey> {
    let data = verify::message_data(message).ok()?;
    Some((u64::from(data.timestamp), hex::encode(&message.hash)))
}

/// A time window (Unix seconds, inclusive) as the `GetAll*` bounds (Farcaster seconds, which
/// the node reads as u32); `None` when no message can be in it.
fn farcaster_window(window: TimeWindow) -> Option<(Option<u64>, Option<u64>)> {
    let largest = u64::from(u32::MAX);
    let start = window.start.map(ids::unix_to_farcaster);
    let stop = match window.end {
        Some(end) if end < ids::FARCASTER_EPOCH_UNIX_SECONDS => return None,
        Some(end) => Some(ids::unix_to_farcaster(end).min(largest)),
        None => None,
    };
    if start.is_some_and(|start| start > largest || stop.is_some_and(|stop| start > stop)) {
        return None;
    }
    Some((start, stop))
}

fn onchain_key_of(key: &str) -> Option<(u32, u32)> {
    let (block, log) = key.split_once(':')?;
    Some((block.parse().ok()?, log.parse().ok()?))
}

fn onchain_order(event: &OnChainEvent) -> (u32, u32, u32, &str) {
    (
        event.block_number,
        event.log_index,
        event.chain_id,
        event.transaction_hash.as_str(),
    )
}

/// The rows the database would store for a message (the hub side's only reading of
/// message bodies).
fn rows_of(message: &Message) -> Batch {
    let mut batch = Batch::default();
    batch.add_message(0, message, false);
    if let Some((_, reason)) = batch.skipped.first() {
        tracing::debug!(hash = %hex::encode(&message.hash), ?reason, "hub message skipped");
    }
    batch
}

fn cast_of(message: &Message) -> Option<Cast> {
    rows_of(message).casts.pop().map(cast_item)
}

fn reaction_of(message: &Message) -> Option<Reaction> {
    rows_of(message).reactions.pop().and_then(reaction_item)
}

fn link_of(message: &Message) -> Option<Link> {
    rows_of(message).links.pop().map(link_item)
}

fn verification_of(message: &Message) -> Option<Verification> {
    rows_of(message).verifications.pop().map(verification_item)
}

fn username_proof_of(proof: &UserNameProof) -> UsernameProof {
    let mut batch = Batch::default();
    batch.add_username_proof(proof);
    match batch.proofs.pop() {
        Some(row) => proof_item(row),
        // add_username_proof always adds its row.
        None => proof_item(ProofRow {
            username: String::from_utf8_lossy(&proof.name).into_owned(),
            fid: proof.fid as i64,
            proof_type: proof.r#type as i16,
            owner: proof.owner.clone(),
            signature: proof.signature.clone(),
            timestamp: proof.timestamp as i64,
        }),
    }
}

/// Message time as rows hold it (Unix seconds) → Farcaster seconds, as items hold it.
fn farcaster_seconds(unix: i64) -> u64 {
    ids::unix_to_farcaster(u64::try_from(unix).unwrap_or(0))
}

fn cast_item(row: CastRow) -> Cast {
    let parent = match (row.parent_fid, row.parent_hash, row.parent_url) {
        (Some(fid), Some(hash), _) => Some(CastTarget::Cast {
            fid: fid as u64,
            hash: hex::encode(hash),
        }),
        (_, _, Some(url)) => Some(CastTarget::Url { url }),
        _ => None,
    };
    Cast {
        hash: hex::encode(&row.hash),
        fid: row.fid as u64,
        timestamp: farcaster_seconds(row.timestamp),
        text: row.text,
        parent,
        embeds: embeds_from_json(&row.embeds)
            .into_iter()
            .map(|embed| match embed {
                EmbedRow::Url(url) => Embed::Url { url },
                EmbedRow::Cast { fid, hash } => Embed::Cast { fid, hash },
            })
            .collect(),
        mentions: numbers(&row.mentions),
        mentions_positions: numbers(&row.mentions_positions)
            .into_iter()
            .map(|position| position as u32)
            .collect(),
    }
}

fn reaction_item(row: ReactionRow) -> Option<Reaction> {
    let target = match (row.target_cast_fid, row.target_cast_hash, row.target_url) {
        (Some(fid), Some(hash), _) => CastTarget::Cast {
            fid: fid as u64,
            hash: hex::encode(hash),
        },
        (_, _, Some(url)) => CastTarget::Url { url },
        _ => return None,
    };
    Some(Reaction {
        hash: hex::encode(&row.hash),
        fid: row.fid as u64,
        timestamp: farcaster_seconds(row.timestamp),
        reaction_type: ReactionType::from_id(i32::from(row.reaction_type))?,
        target,
    })
}

fn link_item(row: LinkRow) -> Link {
    Link {
        hash: hex::encode(&row.hash),
        fid: row.fid as u64,
        timestamp: farcaster_seconds(row.timestamp),
        link_type: row.link_type,
        target_fid: row.target_fid as u64,
        display_timestamp: row.display_timestamp.map(farcaster_seconds),
    }
}

fn compact_state_item(row: CompactStateRow) -> LinkCompactState {
    LinkCompactState {
        hash: hex::encode(&row.hash),
        fid: row.fid as u64,
        timestamp: farcaster_seconds(row.timestamp),
        link_type: row.link_type,
        target_fids: row.target_fids.into_iter().map(|fid| fid as u64).collect(),
    }
}

fn verification_item(row: VerificationRow) -> Verification {
    let protocol = i32::from(row.protocol);
    Verification {
        hash: hex::encode(&row.hash),
        fid: row.fid as u64,
        timestamp: farcaster_seconds(row.timestamp),
        address: verification_address(protocol, &row.address),
        protocol: verification_protocol_name(protocol).to_owned(),
        block_hash: hex::encode(&row.block_hash),
        verification_type: row.verification_type as u32,
        chain_id: row.chain_id as u32,
    }
}

fn user_data_item(row: UserDataRow) -> UserDataValue {
    let data_type = i32::from(row.data_type);
    UserDataValue {
        hash: hex::encode(&row.hash),
        fid: row.fid as u64,
        timestamp: farcaster_seconds(row.timestamp),
        data_type,
        data_type_name: user_data_type_name(data_type).to_owned(),
        value: row.value,
    }
}

fn proof_item(row: ProofRow) -> UsernameProof {
    UsernameProof {
        name: row.username,
        fid: row.fid as u64,
        timestamp: row.timestamp as u64,
        proof_type: username_proof_type_name(i32::from(row.proof_type)).to_owned(),
        owner: format!("0x{}", hex::encode(&row.owner)),
        signature: hex::encode(&row.signature),
    }
}

fn onchain_item(row: OnchainRow) -> OnChainEvent {
    let event_type = i32::from(row.event_type);
    OnChainEvent {
        fid: row.fid as u64,
        event_type,
        event_type_name: onchain_event_type_name(event_type).to_owned(),
        chain_id: row.chain_id as u32,
        block_number: row.block_number as u32,
        block_hash: hex::encode(&row.block_hash),
        block_timestamp: row.block_timestamp as u64,
        transaction_hash: hex::encode(&row.tx_hash),
        log_index: row.log_index as u32,
        tx_index: row.tx_index as u32,
        body: row.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_become_farcaster_bounds_or_nothing() {
        let epoch = ids::FARCASTER_EPOCH_UNIX_SECONDS;
        let window = |start, end| TimeWindow { start, end };
        assert_eq!(farcaster_window(window(None, None)), Some((None, None)));
        assert_eq!(
            farcaster_window(window(Some(epoch + 10), Some(epoch + 20))),
            Some((Some(10), Some(20)))
        );
        // Before the epoch: the start is the epoch; a window that ends before it is empty.
        assert_eq!(
            farcaster_window(window(Some(0), Some(epoch))),
            Some((Some(0), Some(0)))
        );
        assert_eq!(farcaster_window(window(None, Some(epoch - 1))), None);
        assert_eq!(
            farcaster_window(window(Some(epoch + 20), Some(epoch + 10))),
            None
        );
        assert_eq!(farcaster_window(window(Some(u64::MAX), None)), None);
        assert_eq!(
            farcaster_window(window(None, Some(u64::MAX))),
            Some((None, Some(u64::from(u32::MAX))))
        );
    }

    #[test]
    fn onchain_positions_read_back() {
        assert_eq!(onchain_key_of("12:3"), Some((12, 3)));
        for bad in ["", "12", "a:b", "1:2:3", "-1:2"] {
            assert_eq!(onchain_key_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_database_cursor_continues_elsewhere() {
        let page = PageRequest {
            limit: 10,
            cursor: Some(Cursor {
                hub_token: None,
                after: Some(Position {
                    timestamp: 1,
                    key: "ab".into(),
                }),
            }),
        };
        assert!(matches!(
            check_cursor(&page),
            Err(SourceError::CursorElsewhere)
        ));
        assert_eq!(check_cursor(&PageRequest::default()).ok(), Some(None));
    }
}
