//! The dev hub's gRPC service: every HubService RPC of `proto/`, answered from the in-memory
//! store and event logs with the semantics of a Snapchain node (paging, tokens, error codes,
//! Subscribe replay then live), plus the stream faults of [`Faults`].

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tonic::{Request, Response, Status};
use waypoint_proto::hub_service_server::HubService;
use waypoint_proto::{
    CastId, CastsByParentRequest, DbStats, EventRequest, EventsRequest, EventsResponse, FidRequest,
    FidTimestampRequest, FidsRequest, FidsResponse, GetInfoRequest, GetInfoResponse, HubEvent,
    HubEventType, IdRegisterEventType, LinkRequest, LinksByFidRequest, LinksByTargetRequest,
    Message, MessagesResponse, OnChainEvent, OnChainEventRequest, OnChainEventResponse,
    OnChainEventType, ReactionRequest, ReactionsByFidRequest, ReactionsByTargetRequest, ShardInfo,
    SubscribeRequest, UserDataRequest, UserDataType, UserNameProof, UsernameProofRequest,
    UsernameProofsResponse, VerificationRequest, casts_by_parent_request, link_request,
    links_by_target_request, message_data, on_chain_event, reaction_request,
    reactions_by_target_request,
};

use super::Shared;
use super::faults::Faults;
use super::log::{self, LogEntry};
use super::state::HubState;
use super::store::{BadPageToken, DEFAULT_PAGE_SIZE, Page, PageOptions, Set, Store, Target};
use crate::hub::ids;

/// Events replayed per read of the log, as the node pages its store.
const REPLAY_PAGE_SIZE: usize = 1000;

/// Queue between a subscription's task and its gRPC stream, as on the node.
const SUBSCRIBER_QUEUE: usize = 100;

/// The HubService implementation.
pub(crate) struct HubServer {
    shared: Arc<Shared>,
}

impl HubServer {
    pub(crate) fn new(shared: Arc<Shared>) -> HubServer {
        HubServer { shared }
    }

    fn num_shards(&self) -> u32 {
        self.shared.num_shards
    }

    /// The data shard of a fid, as a node's `get_stores_for` computes it (or the injected
    /// failure of the fid's reads).
    fn shard_for(&self, fid: u64) -> Result<u32, Status> {
        self.check_fid(fid)?;
        ids::shard_for_fid(fid, self.num_shards())
            .ok_or_else(|| Status::invalid_argument(format!("no shard store for fid {fid}")))
    }

    /// The injected failure of a fid's reads, if any.
    fn check_fid(&self, fid: u64) -> Result<(), Status> {
        match self.shared.faults().fid_status(fid) {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    fn check_shard(&self, shard: u32) -> Result<(), Status> {
        if shard >= 1 && shard <= self.num_shards() {
            Ok(())
        } else {
            Err(Status::invalid_argument(format!(
                "no shard store for shard {shard}"
            )))
        }
    }

    /// Reads the state under the lock.
    fn read<T>(&self, read: impl FnOnce(&HubState) -> T) -> T {
        let state = self.shared.read_state();
        read(&state)
    }

    /// A per-fid page query.
    fn fid_page(
        &self,
        fid: u64,
        query: impl FnOnce(&HubState) -> Result<Page, BadPageToken>,
    ) -> Result<Response<MessagesResponse>, Status> {
        self.shard_for(fid)?;
        let page = self.read(query).map_err(bad_token)?;
        Ok(Response::new(MessagesResponse {
            messages: page.messages,
            next_page_token: page.next_page_token,
        }))
    }

    /// A query that spans every shard store: one page per shard, and a JSON array of per-shard
    /// tokens that is always returned (all null when every shard is done).
    fn cross_shard_page(
        &self,
        page_token: Option<Vec<u8>>,
        page_size: Option<u32>,
        reverse: Option<bool>,
        query: impl Fn(&Store, &PageOptions) -> Result<Page, BadPageToken>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let num_shards = self.num_shards() as usize;
        let tokens = per_shard_tokens(page_token, num_shards)?;
        let mut messages = Vec::new();
        let mut next_tokens: Vec<Option<Vec<u8>>> = Vec::with_capacity(num_shards);
        let state = self.shared.read_state();
        for (store, token) in state.stores.iter().zip(tokens) {
            let options = PageOptions::new(page_size, token, reverse);
            // The node answers an empty page for a shard whose query fails.
            let page = query(store, &options).unwrap_or_default();
            messages.extend(page.messages);
            next_tokens.push(page.next_page_token);
        }
        Ok(Response::new(MessagesResponse {
            messages,
            next_page_token: Some(encode_tokens(&next_tokens)?),
        }))
    }
}

fn bad_token(error: BadPageToken) -> Status {
    Status::invalid_argument(error.to_string())
}

fn per_shard_tokens(
    page_token: Option<Vec<u8>>,
    num_shards: usize,
) -> Result<Vec<Option<Vec<u8>>>, Status> {
    let tokens: Vec<Option<Vec<u8>>> = match page_token {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|error| Status::invalid_argument(format!("Invalid page token: {error}")))?,
        None => vec![None; num_shards],
    };
    if tokens.len() != num_shards {
        return Err(Status::invalid_argument(
            "Page token does not match number of shards",
        ));
    }
    Ok(tokens)
}

fn encode_tokens(tokens: &[Option<Vec<u8>>]) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(tokens)
        .map_err(|error| Status::internal(format!("Failed to serialize next_page_token: {error}")))
}

fn not_found(what: &str) -> Status {
    Status::not_found(format!("{what} not found"))
}

fn message_response(
    message: Option<&Arc<Message>>,
    what: &str,
) -> Result<Response<Message>, Status> {
    message
        .map(|message| Response::new(message.as_ref().clone()))
        .ok_or_else(|| not_found(what))
}

fn timestamps(request: &FidTimestampRequest) -> (Option<u32>, Option<u32>) {
    // The node casts the bounds to u32.
    (
        request.start_timestamp.map(|ts| ts as u32),
        request.stop_timestamp.map(|ts| ts as u32),
    )
}

fn is_id_register(event: &OnChainEvent, wanted: &[IdRegisterEventType]) -> bool {
    matches!(
        event.body.as_ref(),
        Some(on_chain_event::Body::IdRegisterEventBody(body))
            if wanted.iter().any(|t| *t as i32 == body.event_type)
    )
}

/// Key of an ID_REGISTER event in the node's on-chain store, used as the GetFids page token.
fn onchain_token(event: &OnChainEvent) -> Vec<u8> {
    let mut token = Vec::with_capacity(16);
    token.extend_from_slice(&(event.fid as u32).to_be_bytes());
    token.extend_from_slice(&event.block_number.to_be_bytes());
    token.extend_from_slice(&event.log_index.to_be_bytes());
    token
}

fn onchain_key(event: &OnChainEvent) -> (u32, u32, u32) {
    (event.fid as u32, event.block_number, event.log_index)
}

fn key_of_onchain_token(token: &[u8]) -> Result<(u32, u32, u32), Status> {
    if token.len() != 12 {
        return Err(Status::invalid_argument(format!(
            "invalid page token ({} bytes)",
            token.len()
        )));
    }
    let part = |index: usize| {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&token[index * 4..index * 4 + 4]);
        u32::from_be_bytes(bytes)
    };
    Ok((part(0), part(1), part(2)))
}

#[tonic::async_trait]
impl HubService for HubServer {
    async fn get_info(
        &self,
        _request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let now = ids::farcaster_now();
        let response = self.read(|state| {
            let mut shard_infos = Vec::new();
            let mut total_messages = 0;
            let mut total_registrations = 0;
            let mut total_size = 0;
            let mut max_height = 0;
            let mut data_infos = Vec::new();
            for log in &state.logs {
                let shard = log.shard();
                let store = state.store(shard);
                let num_messages = store.map_or(0, |store| store.num_messages() as u64);
                let num_registrations = store.map_or(0, Store::num_registrations);
                let height = log.next_block().saturating_sub(1);
                max_height = max_height.max(height);
                // A rough on-disk size: the node reports RocksDB's estimate.
                let approx_size = num_messages * 350 + log.len() as u64 * 300;
                total_messages += num_messages;
                total_registrations += num_registrations;
                total_size += approx_size;
                data_infos.push(ShardInfo {
                    shard_id: shard,
                    max_height: height,
                    num_messages,
                    num_fid_registrations: num_registrations,
                    approx_size,
                    block_delay: now.saturating_sub(log.last_block_timestamp()),
                    mempool_size: log.num_pending() as u64,
                    num_onchain_events: 0,
                });
            }
            shard_infos.push(ShardInfo {
                shard_id: 0,
                max_height,
                num_messages: 0,
                num_fid_registrations: 0,
                approx_size: 0,
                block_delay: 0,
                mempool_size: 0,
                num_onchain_events: 0,
            });
            shard_infos.extend(data_infos);
            GetInfoResponse {
                version: self.shared.version.clone(),
                db_stats: Some(DbStats {
                    num_messages: total_messages,
                    num_fid_registrations: total_registrations,
                    approx_size: total_size,
                }),
                peer_id: self.shared.peer_id.clone(),
                num_shards: self.num_shards(),
                shard_infos,
                next_engine_version_timestamp: 0,
            }
        });
        Ok(Response::new(response))
    }

    async fn get_fids(
        &self,
        request: Request<FidsRequest>,
    ) -> Result<Response<FidsResponse>, Status> {
        let request = request.into_inner();
        self.check_shard(request.shard_id)?;
        let shard = request.shard_id;
        let options = PageOptions::new(request.page_size, request.page_token, request.reverse);
        let after = options
            .page_token
            .as_deref()
            .map(key_of_onchain_token)
            .transpose()?;
        let events = self.read(|state| {
            state
                .store(shard)
                .map(Store::id_register_events)
                .unwrap_or_default()
        });
        // Paging walks every ID_REGISTER event; only REGISTER ones become fids, after paging.
        let size = options.page_size.map_or(DEFAULT_PAGE_SIZE, |s| s as usize);
        let mut selected: Vec<&OnChainEvent> = Vec::new();
        let mut next_page_token = None;
        let mut sorted: Vec<&OnChainEvent> = events.iter().collect();
        sorted.sort_by_key(|event| onchain_key(event));
        if options.reverse {
            sorted.reverse();
        }
        for event in sorted {
            if let Some(after) = after {
                let key = onchain_key(event);
                let past = if options.reverse {
                    key < after
                } else {
                    key > after
                };
                if !past {
                    continue;
                }
            }
            selected.push(event);
            if selected.len() >= size {
                next_page_token = Some(onchain_token(event));
                break;
            }
        }
        let fids = selected
            .into_iter()
            .filter(|event| is_id_register(event, &[IdRegisterEventType::Register]))
            .map(|event| event.fid)
            .collect();
        Ok(Response::new(FidsResponse {
            fids,
            next_page_token,
        }))
    }

    type SubscribeStream = ReceiverStream<Result<HubEvent, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let shards: Vec<u32> = match request.shard_index {
            Some(shard) if shard >= 1 && shard <= self.num_shards() => vec![shard],
            Some(_) => return Err(Status::unknown("Invalid shard id")),
            None => (1..=self.num_shards()).collect(),
        };
        tracing::debug!(
            event_types = ?request.event_types,
            from_id = ?request.from_id,
            shard_index = ?request.shard_index,
            "devhub subscribe"
        );
        // Listen to the live broadcast before replaying, so that nothing committed during the
        // replay is missed (the node has a gap here; a consumer must cope with both).
        let receivers: Vec<(u32, BroadcastStream<Arc<LogEntry>>)> = shards
            .iter()
            .map(|shard| {
                let sender = &self.shared.senders[(*shard - 1) as usize];
                (*shard, BroadcastStream::new(sender.subscribe()))
            })
            .collect();
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        let number = self
            .shared
            .next_subscriber
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subscription = Subscription {
            shared: self.shared.clone(),
            event_types: request.event_types,
            sender,
            rng: StdRng::seed_from_u64(
                self.shared.seed ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            num_sent: 0,
        };
        tokio::spawn(subscription.run(shards, request.from_id, receivers));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn get_event(
        &self,
        request: Request<EventRequest>,
    ) -> Result<Response<HubEvent>, Status> {
        let request = request.into_inner();
        self.check_shard(request.shard_index)?;
        let entry = self.read(|state| {
            state
                .log(request.shard_index)
                .and_then(|log| log.get(request.id).cloned())
        });
        // The node reports a missing event as an internal error.
        let entry = entry.ok_or_else(|| Status::internal("not_found: Event not found"))?;
        Ok(Response::new(entry.decode()))
    }

    async fn get_events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<EventsResponse>, Status> {
        let request = request.into_inner();
        let shards: Vec<u32> = match request.shard_index {
            Some(shard) => {
                if shard < 1 || shard > self.num_shards() {
                    return Err(Status::invalid_argument("Shard not found"));
                }
                vec![shard]
            }
            None => (1..=self.num_shards()).collect(),
        };
        let tokens = per_shard_tokens(request.page_token, shards.len())?;
        let page_size = request
            .page_size
            .map_or(DEFAULT_PAGE_SIZE, |size| size as usize);
        let reverse = request.reverse.unwrap_or(false);
        let mut events = Vec::new();
        let mut next_tokens = Vec::with_capacity(shards.len());
        let pages = {
            let state = self.shared.read_state();
            let mut pages = Vec::with_capacity(shards.len());
            for (shard, token) in shards.iter().zip(tokens) {
                let after = match token.filter(|token| !token.is_empty()) {
                    Some(token) => Some(log::id_of_token(&token).ok_or_else(|| {
                        Status::invalid_argument("Invalid page token: not an event key")
                    })?),
                    None => None,
                };
                let page = state
                    .log(*shard)
                    .map(|log| {
                        log.page(request.start_id, request.stop_id, after, page_size, reverse)
                    })
                    .unwrap_or_default();
                pages.push(page);
            }
            pages
        };
        for page in pages {
            events.extend(page.entries.iter().map(|entry| entry.decode()));
            next_tokens.push(page.next_page_token);
        }
        Ok(Response::new(EventsResponse {
            events,
            next_page_token: Some(encode_tokens(&next_tokens)?),
        }))
    }

    async fn get_cast(&self, request: Request<CastId>) -> Result<Response<Message>, Status> {
        let request = request.into_inner();
        self.shard_for(request.fid)?;
        let state = self.shared.read_state();
        message_response(
            state
                .store_for(request.fid)
                .cast(request.fid, &request.hash),
            "cast",
        )
    }

    async fn get_casts_by_fid(
        &self,
        request: Request<FidRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let options = PageOptions::new(request.page_size, request.page_token, request.reverse);
        self.fid_page(request.fid, |state| {
            state
                .store_for(request.fid)
                .adds(request.fid, Set::Casts, &options, |_| true)
        })
    }

    async fn get_casts_by_parent(
        &self,
        request: Request<CastsByParentRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let Some(parent) = request.parent else {
            return Err(Status::not_found("Parent not specified"));
        };
        self.cross_shard_page(
            request.page_token,
            request.page_size,
            request.reverse,
            |store, options| match &parent {
                casts_by_parent_request::Parent::ParentCastId(cast_id) => {
                    store.casts_by_parent_cast(cast_id.fid, &cast_id.hash, options)
                }
                casts_by_parent_request::Parent::ParentUrl(url) => {
                    store.casts_by_parent_url(url, options)
                }
            },
        )
    }

    async fn get_casts_by_mention(
        &self,
        request: Request<FidRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let mention = request.fid;
        self.cross_shard_page(
            request.page_token,
            request.page_size,
            request.reverse,
            |store, options| store.casts_by_mention(mention, options),
        )
    }

    async fn get_reaction(
        &self,
        request: Request<ReactionRequest>,
    ) -> Result<Response<Message>, Status> {
        let request = request.into_inner();
        self.shard_for(request.fid)?;
        let target = match request.target {
            Some(reaction_request::Target::TargetCastId(cast_id)) => {
                let hash = sign_hash(&cast_id.hash).ok_or_else(|| not_found("reaction"))?;
                Target::Cast(cast_id.fid, hash)
            }
            Some(reaction_request::Target::TargetUrl(url)) => Target::Url(url),
            None => {
                return Err(Status::internal(
                    "bad_request.invalid_param: target is required",
                ));
            }
        };
        let state = self.shared.read_state();
        message_response(
            state
                .store_for(request.fid)
                .reaction(request.fid, request.reaction_type, target),
            "reaction",
        )
    }

    async fn get_reactions_by_fid(
        &self,
        request: Request<ReactionsByFidRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let options = PageOptions::new(request.page_size, request.page_token, request.reverse);
        // Absent or 0 means every type.
        let wanted = request.reaction_type.filter(|t| *t != 0);
        self.fid_page(request.fid, |state| {
            state
                .store_for(request.fid)
                .adds(request.fid, Set::Reactions, &options, |data| {
                    wanted.is_none_or(|wanted| reaction_type_of(data) == Some(wanted))
                })
        })
    }

    async fn get_reactions_by_cast(
        &self,
        request: Request<ReactionsByTargetRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let reaction_type = request
            .reaction_type
            .ok_or_else(|| Status::invalid_argument("reaction_type is required"))?;
        let Some(reactions_by_target_request::Target::TargetCastId(cast_id)) = request.target
        else {
            return Err(Status::not_found("Target not specified"));
        };
        let target = sign_hash(&cast_id.hash).map(|hash| Target::Cast(cast_id.fid, hash));
        self.reactions_by_target(
            target,
            Some(reaction_type),
            request.page_token,
            request.page_size,
            request.reverse,
        )
    }

    async fn get_reactions_by_target(
        &self,
        request: Request<ReactionsByTargetRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let target = match request.target {
            Some(reactions_by_target_request::Target::TargetCastId(cast_id)) => {
                sign_hash(&cast_id.hash).map(|hash| Target::Cast(cast_id.fid, hash))
            }
            Some(reactions_by_target_request::Target::TargetUrl(url)) => Some(Target::Url(url)),
            None => return Err(Status::not_found("Target not specified")),
        };
        self.reactions_by_target(
            target,
            request.reaction_type,
            request.page_token,
            request.page_size,
            request.reverse,
        )
    }

    async fn get_user_data(
        &self,
        request: Request<UserDataRequest>,
    ) -> Result<Response<Message>, Status> {
        let request = request.into_inner();
        self.shard_for(request.fid)?;
        UserDataType::try_from(request.user_data_type)
            .map_err(|_| Status::invalid_argument("Invalid user data type"))?;
        let state = self.shared.read_state();
        message_response(
            state
                .store_for(request.fid)
                .user_data(request.fid, request.user_data_type),
            "user data",
        )
    }

    async fn get_user_data_by_fid(
        &self,
        request: Request<FidRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let options = PageOptions::new(request.page_size, request.page_token, request.reverse);
        self.fid_page(request.fid, |state| {
            state
                .store_for(request.fid)
                .adds(request.fid, Set::UserData, &options, |_| true)
        })
    }

    async fn get_username_proof(
        &self,
        request: Request<UsernameProofRequest>,
    ) -> Result<Response<UserNameProof>, Status> {
        let request = request.into_inner();
        if request.name.ends_with(b".eth") {
            // ENS proofs arrive as USERNAME_PROOF messages, which the dev hub does not generate.
            return Err(Status::not_found("ENS username proof not found"));
        }
        let state = self.shared.read_state();
        state
            .stores
            .iter()
            .find_map(|store| store.username_proof(&request.name))
            .cloned()
            .map(Response::new)
            .ok_or_else(|| not_found("username proof"))
    }

    async fn get_user_name_proofs_by_fid(
        &self,
        request: Request<FidRequest>,
    ) -> Result<Response<UsernameProofsResponse>, Status> {
        let request = request.into_inner();
        self.check_fid(request.fid)?;
        let state = self.shared.read_state();
        // Each shard's user data store indexes the fid's latest fname, and fnames are mirrored
        // to every shard: the node returns one copy per shard.
        let proofs = state
            .stores
            .iter()
            .filter_map(|store| {
                store
                    .username_proofs(request.fid)
                    .into_iter()
                    .max_by_key(|proof| (proof.timestamp, proof.name.clone()))
            })
            .collect();
        Ok(Response::new(UsernameProofsResponse { proofs }))
    }

    async fn get_verification(
        &self,
        request: Request<VerificationRequest>,
    ) -> Result<Response<Message>, Status> {
        let request = request.into_inner();
        self.shard_for(request.fid)?;
        let state = self.shared.read_state();
        message_response(
            state
                .store_for(request.fid)
                .verification(request.fid, &request.address),
            "verification",
        )
    }

    async fn get_verifications_by_fid(
        &self,
        request: Request<FidRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let options = PageOptions::new(request.page_size, request.page_token, request.reverse);
        self.fid_page(request.fid, |state| {
            state
                .store_for(request.fid)
                .adds(request.fid, Set::Verifications, &options, |_| true)
        })
    }

    async fn get_on_chain_events(
        &self,
        request: Request<OnChainEventRequest>,
    ) -> Result<Response<OnChainEventResponse>, Status> {
        let request = request.into_inner();
        self.check_fid(request.fid)?;
        OnChainEventType::try_from(request.event_type)
            .map_err(|_| Status::invalid_argument("Invalid event type"))?;
        // Paging is ignored: every event of the type, no token.
        // Merged across the shard stores (only the fid's home shard has them here).
        let mut events = self.read(|state| {
            state
                .stores
                .iter()
                .flat_map(|store| store.onchain_events(request.fid, request.event_type))
                .collect::<Vec<_>>()
        });
        events.sort_by_key(onchain_key);
        Ok(Response::new(OnChainEventResponse {
            events,
            next_page_token: None,
        }))
    }

    async fn get_id_registry_on_chain_event(
        &self,
        request: Request<FidRequest>,
    ) -> Result<Response<OnChainEvent>, Status> {
        let request = request.into_inner();
        self.check_fid(request.fid)?;
        let events = self.read(|state| {
            state
                .store_for(request.fid)
                .onchain_events(request.fid, OnChainEventType::IdRegister as i32)
        });
        events
            .into_iter()
            .filter(|event| {
                is_id_register(
                    event,
                    &[IdRegisterEventType::Register, IdRegisterEventType::Transfer],
                )
            })
            .max_by_key(onchain_key)
            .map(Response::new)
            .ok_or_else(|| Status::not_found("ID registry event not found"))
    }

    async fn get_link(&self, request: Request<LinkRequest>) -> Result<Response<Message>, Status> {
        let request = request.into_inner();
        self.shard_for(request.fid)?;
        let Some(link_request::Target::TargetFid(target)) = request.target else {
            return Err(Status::internal(
                "bad_request.invalid_param: target is required",
            ));
        };
        let state = self.shared.read_state();
        message_response(
            state
                .store_for(request.fid)
                .link(request.fid, &request.link_type, target),
            "link",
        )
    }

    async fn get_links_by_fid(
        &self,
        request: Request<LinksByFidRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let options = PageOptions::new(request.page_size, request.page_token, request.reverse);
        // Absent or empty means every type.
        let wanted = request.link_type.filter(|t| !t.is_empty());
        self.fid_page(request.fid, |state| {
            state
                .store_for(request.fid)
                .adds(request.fid, Set::Links, &options, |data| {
                    wanted
                        .as_deref()
                        .is_none_or(|wanted| link_type_of(data) == Some(wanted))
                })
        })
    }

    async fn get_links_by_target(
        &self,
        request: Request<LinksByTargetRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let Some(link_type) = request.link_type else {
            return Err(Status::invalid_argument("link_type is required"));
        };
        let Some(links_by_target_request::Target::TargetFid(target)) = request.target else {
            return Err(Status::not_found("Target not specified"));
        };
        self.cross_shard_page(
            request.page_token,
            request.page_size,
            request.reverse,
            // An empty type means every type (the node's link store filters on a non-empty one).
            |store, options| {
                let wanted = Some(link_type.as_str()).filter(|wanted| !wanted.is_empty());
                store.links_by_target(target, wanted, options)
            },
        )
    }

    async fn get_link_compact_state_message_by_fid(
        &self,
        request: Request<FidRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        let request = request.into_inner();
        let options = PageOptions::new(request.page_size, request.page_token, request.reverse);
        self.fid_page(request.fid, |state| {
            state
                .store_for(request.fid)
                .compact_states(request.fid, &options)
        })
    }

    async fn get_all_cast_messages_by_fid(
        &self,
        request: Request<FidTimestampRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        self.all_messages(request.into_inner(), Set::Casts)
    }

    async fn get_all_reaction_messages_by_fid(
        &self,
        request: Request<FidTimestampRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        self.all_messages(request.into_inner(), Set::Reactions)
    }

    async fn get_all_verification_messages_by_fid(
        &self,
        request: Request<FidTimestampRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        self.all_messages(request.into_inner(), Set::Verifications)
    }

    async fn get_all_user_data_messages_by_fid(
        &self,
        request: Request<FidTimestampRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        self.all_messages(request.into_inner(), Set::UserData)
    }

    async fn get_all_link_messages_by_fid(
        &self,
        request: Request<FidTimestampRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        self.all_messages(request.into_inner(), Set::Links)
    }

    async fn get_all_lend_storage_messages_by_fid(
        &self,
        request: Request<FidTimestampRequest>,
    ) -> Result<Response<MessagesResponse>, Status> {
        // Read from the block shard on the node; the dev hub generates no LEND_STORAGE.
        let _ = request;
        Ok(Response::new(MessagesResponse {
            messages: Vec::new(),
            next_page_token: None,
        }))
    }
}

impl HubServer {
    fn all_messages(
        &self,
        request: FidTimestampRequest,
        set: Set,
    ) -> Result<Response<MessagesResponse>, Status> {
        let (start, stop) = timestamps(&request);
        let options = PageOptions::new(request.page_size, request.page_token, request.reverse);
        self.fid_page(request.fid, |state| {
            state
                .store_for(request.fid)
                .all_messages(request.fid, set, start, stop, &options)
        })
    }

    fn reactions_by_target(
        &self,
        target: Option<Target>,
        reaction_type: Option<i32>,
        page_token: Option<Vec<u8>>,
        page_size: Option<u32>,
        reverse: Option<bool>,
    ) -> Result<Response<MessagesResponse>, Status> {
        // Type 0 (NONE) means every type.
        let reaction_type = reaction_type.filter(|t| *t != 0);
        self.cross_shard_page(
            page_token,
            page_size,
            reverse,
            |store, options| match &target {
                Some(target) => store.reactions_by_target(target, reaction_type, options),
                None => Ok(Page::default()),
            },
        )
    }
}

fn sign_hash(bytes: &[u8]) -> Option<super::sign::Hash> {
    super::sign::Hash::try_from(bytes).ok()
}

fn reaction_type_of(data: &waypoint_proto::MessageData) -> Option<i32> {
    match data.body.as_ref()? {
        message_data::Body::ReactionBody(body) => Some(body.r#type),
        _ => None,
    }
}

fn link_type_of(data: &waypoint_proto::MessageData) -> Option<&str> {
    match data.body.as_ref()? {
        message_data::Body::LinkBody(body) => Some(body.r#type.as_str()),
        _ => None,
    }
}

/// One Subscribe call: replays the log from `from_id`, then forwards live events, applying
/// the stream faults in force.
struct Subscription {
    shared: Arc<Shared>,
    event_types: Vec<i32>,
    sender: mpsc::Sender<Result<HubEvent, Status>>,
    rng: StdRng,
    num_sent: u64,
}

/// Whether the subscription goes on after an event.
enum Flow {
    Continue,
    Stop,
}

impl Subscription {
    async fn run(
        mut self,
        shards: Vec<u32>,
        from_id: Option<u64>,
        receivers: Vec<(u32, BroadcastStream<Arc<LogEntry>>)>,
    ) {
        let mut replayed_up_to: HashMap<u32, u64> = HashMap::new();
        if let Some(from_id) = from_id {
            for shard in &shards {
                let mut after: Option<u64> = None;
                loop {
                    let page = {
                        let state = self.shared.read_state();
                        match state.log(*shard) {
                            Some(log) => log.page(from_id, None, after, REPLAY_PAGE_SIZE, false),
                            None => break,
                        }
                    };
                    for entry in &page.entries {
                        replayed_up_to.insert(*shard, entry.id);
                        if let Flow::Stop = self.offer(entry, false).await {
                            return;
                        }
                    }
                    match page.next_page_token.as_deref().and_then(log::id_of_token) {
                        Some(last) => after = Some(last),
                        None => break,
                    }
                }
            }
        }

        let mut live = futures::stream::select_all(
            receivers
                .into_iter()
                .map(|(shard, stream)| stream.map(move |item| (shard, item)).boxed()),
        );
        let cancel = self.shared.cancel.clone();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = self.sender.send(Err(Status::unavailable("dev hub shutting down"))).await;
                    return;
                }
                _ = self.sender.closed() => return,
                next = live.next() => next,
            };
            let Some((shard, item)) = next else {
                return;
            };
            match item {
                Ok(entry) => {
                    if replayed_up_to
                        .get(&shard)
                        .is_some_and(|last| entry.id <= *last)
                    {
                        continue;
                    }
                    if let Flow::Stop = self.offer(&entry, true).await {
                        return;
                    }
                }
                Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                    // As on the node: a slow subscriber silently misses events.
                    tracing::warn!(shard, skipped, "devhub subscriber lagged, events skipped");
                }
            }
        }
    }

    /// Sends an event if the subscriber asked for its type, applying the stream faults.
    async fn offer(&mut self, entry: &LogEntry, live: bool) -> Flow {
        if !self.event_types.contains(&entry.event_type) {
            return Flow::Continue;
        }
        let faults: Faults = self.shared.faults();
        let is_block = entry.event_type == HubEventType::BlockConfirmed as i32;
        if live && faults.stall_live {
            return Flow::Continue;
        }
        if live && !is_block && faults.drop_rate > 0.0 && self.rng.random_bool(faults.drop_rate) {
            return Flow::Continue;
        }
        let copies = if faults.duplicate_rate > 0.0 && self.rng.random_bool(faults.duplicate_rate) {
            2
        } else {
            1
        };
        let event = entry.decode();
        for _ in 0..copies {
            if let Some(limit) = faults.cut_subscribe_after
                && self.num_sent >= limit
            {
                if !faults.cut_cleanly {
                    let _ = self
                        .sender
                        .send(Err(Status::unavailable(
                            "stream cut by dev hub fault injection",
                        )))
                        .await;
                }
                return Flow::Stop;
            }
            if self.sender.send(Ok(event.clone())).await.is_err() {
                return Flow::Stop;
            }
            self.num_sent += 1;
        }
        Flow::Continue
    }
}
