//! The Snapchain gRPC client: connection (TLS or plaintext), configured metadata on every
//! call, deadlines, a raised receive limit, retries of transient failures, raw Subscribe, and
//! paging through every page of the list RPCs.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use rand::Rng;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use waypoint_proto::hub_service_client::HubServiceClient;
use waypoint_proto::{
    CastId, CastsByParentRequest, EventRequest, EventsRequest, FidRequest, FidTimestampRequest,
    FidsRequest, GetInfoRequest, GetInfoResponse, HubEvent, HubEventType, LinkRequest,
    LinksByFidRequest, LinksByTargetRequest, Message, MessagesResponse, OnChainEvent,
    OnChainEventRequest, OnChainEventResponse, ReactionRequest, ReactionsByFidRequest,
    ReactionsByTargetRequest, SubscribeRequest, UserDataRequest, UserNameProof,
    UsernameProofRequest, UsernameProofsResponse, VerificationRequest,
};

use super::codec::RawResponseCodec;
use super::error::HubError;
use super::limit::Limiter;
use crate::metrics::{HUB_REQUEST_ERRORS_TOTAL, LABEL_CODE, LABEL_METHOD};

/// HTTP/2 keepalive ping interval: finds a dead connection within a minute even when idle.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Retries of transient failures: exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        let jitter = rand::rng().random_range(0.5..=1.0);
        base.mul_f64(jitter)
    }
}

/// How to reach a hub.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `http://host:port` (plaintext) or `https://host:port` (TLS with the system's roots).
    pub uri: String,
    pub tls: bool,
    /// gRPC metadata sent on every call (unary and streaming).
    pub headers: Vec<(String, String)>,
    /// Deadline of each unary call.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Receive limit per message.
    pub max_message_size: usize,
    pub retry: RetryPolicy,
    /// Unary calls in flight at once, over every clone of the client.
    pub max_concurrent_requests: usize,
    /// Unary calls per second over every clone (None: no ceiling until the hub pushes back).
    pub max_requests_per_second: Option<f64>,
}

/// Adds the configured metadata to every request.
#[derive(Clone)]
struct Headers(Arc<Vec<(AsciiMetadataKey, AsciiMetadataValue)>>);

impl Interceptor for Headers {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (key, value) in self.0.iter() {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        Ok(request)
    }
}

type Rpc = HubServiceClient<InterceptedService<Channel, Headers>>;

/// A hub client; cheap to clone (clones share the connection). The connection is made lazily
/// and re-made after failures, so a hub that is down at start-up or restarts is picked up
/// again by the next call.
#[derive(Clone)]
pub struct Client {
    rpc: Rpc,
    channel: Channel,
    headers: Headers,
    options: Arc<ClientOptions>,
    limiter: Arc<Limiter>,
}

/// Raw HubEvent frames of a subscription, as the hub sent them.
pub type RawEventStream = BoxStream<'static, Result<Bytes, HubError>>;

impl Client {
    /// Builds a client; fails only on unusable options (naming the field), never because the
    /// hub is unreachable.
    pub fn new(options: ClientOptions) -> Result<Client, HubError> {
        let mut headers = Vec::with_capacity(options.headers.len());
        for (name, value) in &options.headers {
            let key = AsciiMetadataKey::from_str(&name.to_ascii_lowercase()).map_err(|_| {
                HubError::InvalidOption {
                    field: "headers",
                    message: format!("{name:?} is not a valid gRPC metadata name"),
                }
            })?;
            let value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| {
                HubError::InvalidOption {
                    field: "headers",
                    message: format!("the value of {name:?} is not valid gRPC metadata text"),
                }
            })?;
            headers.push((key, value));
        }
        let invalid_url = |message: String| HubError::InvalidOption {
            field: "url",
            message,
        };
        let mut endpoint = Endpoint::from_shared(options.uri.clone())
            .map_err(|error| invalid_url(format!("{:?}: {error}", options.uri)))?
            .connect_timeout(options.connect_timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if options.tls {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|error| invalid_url(format!("TLS for {:?}: {error}", options.uri)))?;
        }
        let channel = endpoint.connect_lazy();
        let headers = Headers(Arc::new(headers));
        let rpc = HubServiceClient::with_interceptor(channel.clone(), headers.clone())
            .max_decoding_message_size(options.max_message_size);
        let limiter = Arc::new(Limiter::new(
            options.max_concurrent_requests,
            options.max_requests_per_second,
        ));
        Ok(Client {
            rpc,
            channel,
            headers,
            options: Arc::new(options),
            limiter,
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Runs one unary call with a deadline, retrying transient failures per the policy. Every
    /// attempt waits for the process's hub limits (calls in flight, calls per second), and the
    /// hub's answers adjust the rate.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
    ) -> Result<Resp, HubError>
    where
        Req: Clone,
        F: Fn(Rpc, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let limit = self.options.max_message_size;
        let deadline = self.options.request_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut message = tonic::Request::new(request.clone());
            message.set_timeout(deadline);
            let permit = self.limiter.acquire().await;
            // The server's deadline, plus a client-side guard for a server that ignores it.
            let result = match tokio::time::timeout(
                deadline + Duration::from_secs(1),
                call(self.rpc.clone(), message),
            )
            .await
            {
                Ok(Ok(response)) => {
                    self.limiter.answered();
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => HubError::from_status(method, status, limit),
                Err(_) => HubError::Deadline {
                    method,
                    seconds: deadline.as_secs(),
                },
            };
            drop(permit);
            if result.is_overload() {
                self.limiter.overloaded();
            } else if result.is_answer() {
                self.limiter.answered();
            }
            metrics::counter!(HUB_REQUEST_ERRORS_TOTAL, LABEL_METHOD => method, LABEL_CODE => result.code_label())
                .increment(1);
            if !result.is_retryable() || attempt >= self.options.retry.max_attempts.max(1) {
                return Err(result);
            }
            let delay = self.options.retry.delay(attempt);
            tracing::debug!(method, attempt, error = %result, delay_ms = delay.as_millis() as u64, "hub call failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Opens `Subscribe` for one shard and returns its events undecoded. `from_id` is
    /// inclusive; `None` streams live events only. An empty `types` list streams nothing (the
    /// node's rule), so pass the types you want.
    pub async fn subscribe_raw(
        &self,
        shard: u32,
        from_id: Option<u64>,
        types: &[HubEventType],
    ) -> Result<RawEventStream, HubError> {
        const METHOD: &str = "Subscribe";
        let request = SubscribeRequest {
            event_types: types.iter().map(|kind| *kind as i32).collect(),
            from_id,
            shard_index: Some(shard),
        };
        let limit = self.options.max_message_size;
        let mut service = InterceptedService::new(self.channel.clone(), self.headers.clone());
        let mut grpc = tonic::client::Grpc::new(&mut service).max_decoding_message_size(limit);
        let opened = tokio::time::timeout(self.options.request_timeout, async {
            grpc.ready().await.map_err(|error| HubError::Transport {
                method: METHOD,
                message: error.to_string(),
            })?;
            grpc.server_streaming(
                tonic::Request::new(request),
                http::uri::PathAndQuery::from_static("/HubService/Subscribe"),
                RawResponseCodec::<SubscribeRequest>::default(),
            )
            .await
            .map_err(|status| HubError::from_status(METHOD, status, limit))
        })
        .await;
        let response = match opened {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                metrics::counter!(HUB_REQUEST_ERRORS_TOTAL, LABEL_METHOD => METHOD, LABEL_CODE => error.code_label())
                    .increment(1);
                return Err(error);
            }
            Err(_) => {
                return Err(HubError::Deadline {
                    method: METHOD,
                    seconds: self.options.request_timeout.as_secs(),
                });
            }
        };
        let stream = response.into_inner();
        Ok(Box::pin(futures::StreamExt::map(stream, move |item| {
            item.map_err(|status| HubError::from_status(METHOD, status, limit))
        })))
    }

    /// `Subscribe`, decoded.
    pub async fn subscribe(
        &self,
        shard: u32,
        from_id: Option<u64>,
        types: &[HubEventType],
    ) -> Result<impl Stream<Item = Result<HubEvent, HubError>> + Send + 'static, HubError> {
        let raw = self.subscribe_raw(shard, from_id, types).await?;
        Ok(futures::StreamExt::map(raw, |item| {
            item.and_then(|bytes| decode_event(&bytes))
        }))
    }

    pub async fn info(&self) -> Result<GetInfoResponse, HubError> {
        self.unary(
            "GetInfo",
            GetInfoRequest {},
            |mut rpc, request| async move { rpc.get_info(request).await },
        )
        .await
    }

    /// The data shards, 1..=num_shards (shard 0, the block shard, is never listed).
    pub async fn data_shards(&self) -> Result<Vec<u32>, HubError> {
        Ok((1..=self.info().await?.num_shards).collect())
    }

    pub async fn get_event(&self, shard: u32, id: u64) -> Result<HubEvent, HubError> {
        let request = EventRequest {
            id,
            shard_index: shard,
        };
        self.unary("GetEvent", request, |mut rpc, request| async move {
            rpc.get_event(request).await
        })
        .await
    }

    /// One page of `GetEvents`.
    pub async fn events_page(
        &self,
        request: EventsRequest,
    ) -> Result<waypoint_proto::EventsResponse, HubError> {
        self.unary("GetEvents", request, |mut rpc, request| async move {
            rpc.get_events(request).await
        })
        .await
    }

    /// Every page of `GetEvents` for one shard from `start_id` (inclusive) to `stop_id`
    /// (exclusive).
    pub fn events_pages(
        &self,
        shard: u32,
        start_id: u64,
        stop_id: Option<u64>,
        page_size: u32,
    ) -> BoxStream<'static, Result<Vec<HubEvent>, HubError>> {
        let client = self.clone();
        Box::pin(async_stream::try_stream! {
            let mut token: Option<Vec<u8>> = None;
            loop {
                let request = EventsRequest {
                    start_id,
                    shard_index: Some(shard),
                    stop_id,
                    page_size: Some(page_size),
                    page_token: token.clone(),
                    reverse: None,
                };
                let page = client.events_page(request).await?;
                let next = page.next_page_token;
                yield page.events;
                if !events_token_continues(next.as_deref(), token.as_deref()) {
                    break;
                }
                token = next;
            }
        })
    }

    /// Every event of `GetEvents` in the range, collected.
    pub async fn events(
        &self,
        shard: u32,
        start_id: u64,
        stop_id: Option<u64>,
        page_size: u32,
    ) -> Result<Vec<HubEvent>, HubError> {
        let mut pages = self.events_pages(shard, start_id, stop_id, page_size);
        let mut events = Vec::new();
        while let Some(page) = futures::StreamExt::next(&mut pages).await {
            events.extend(page?);
        }
        Ok(events)
    }

    /// The id of the oldest event the hub still keeps for `shard` (`None` when it has none).
    pub async fn oldest_event_id(&self, shard: u32) -> Result<Option<u64>, HubError> {
        let page = self
            .events_page(EventsRequest {
                start_id: 0,
                shard_index: Some(shard),
                stop_id: None,
                page_size: Some(1),
                page_token: None,
                reverse: None,
            })
            .await?;
        Ok(page.events.first().map(|event| event.id))
    }

    /// Every page of `GetFids` for one shard.
    pub fn fids_pages(
        &self,
        shard: u32,
        page_size: u32,
    ) -> BoxStream<'static, Result<Vec<u64>, HubError>> {
        let client = self.clone();
        Box::pin(async_stream::try_stream! {
            let mut token: Option<Vec<u8>> = None;
            loop {
                let request = FidsRequest {
                    page_size: Some(page_size),
                    page_token: token.clone(),
                    reverse: None,
                    shard_id: shard,
                };
                let page = client
                    .unary("GetFids", request, |mut rpc, request| async move { rpc.get_fids(request).await })
                    .await?;
                yield page.fids;
                match next_token(page.next_page_token, token.as_deref(), "GetFids")? {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        })
    }

    /// Every page of one of the per-FID message list RPCs (`GetAll*MessagesByFid` and the
    /// `*ByFid` lists), until the page token is absent or empty.
    pub fn fid_message_pages(
        &self,
        list: FidMessages,
        fid: u64,
        page_size: u32,
    ) -> BoxStream<'static, Result<Vec<Message>, HubError>> {
        let client = self.clone();
        Box::pin(async_stream::try_stream! {
            let mut token: Option<Vec<u8>> = None;
            loop {
                let page = client.fid_messages_page(list, fid, page_size, token.clone()).await?;
                yield page.messages;
                match next_token(page.next_page_token, token.as_deref(), list.method())? {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        })
    }

    /// One page of a per-FID message list.
    pub async fn fid_messages_page(
        &self,
        list: FidMessages,
        fid: u64,
        page_size: u32,
        page_token: Option<Vec<u8>>,
    ) -> Result<MessagesResponse, HubError> {
        let request = FidTimestampRequest {
            fid,
            page_size: Some(page_size),
            page_token,
            reverse: None,
            start_timestamp: None,
            stop_timestamp: None,
        };
        self.fid_messages_page_with(list, request).await
    }

    /// One page of a per-FID message list with every field of the request: order
    /// (`reverse`) and, for the `GetAll*` lists only, Farcaster-second bounds (the other lists
    /// take a `FidRequest` and ignore the bounds).
    pub async fn fid_messages_page_with(
        &self,
        list: FidMessages,
        request: FidTimestampRequest,
    ) -> Result<MessagesResponse, HubError> {
        let plain = FidRequest {
            fid: request.fid,
            page_size: request.page_size,
            page_token: request.page_token.clone(),
            reverse: request.reverse,
        };
        let timed = request;
        macro_rules! timed {
            ($name:literal, $method:ident) => {
                self.unary($name, timed, |mut rpc, request| async move {
                    rpc.$method(request).await
                })
                .await
            };
        }
        macro_rules! plain {
            ($name:literal, $method:ident) => {
                self.unary($name, plain, |mut rpc, request| async move {
                    rpc.$method(request).await
                })
                .await
            };
        }
        match list {
            FidMessages::AllCasts => {
                timed!("GetAllCastMessagesByFid", get_all_cast_messages_by_fid)
            }
            FidMessages::AllReactions => timed!(
                "GetAllReactionMessagesByFid",
                get_all_reaction_messages_by_fid
            ),
            FidMessages::AllLinks => {
                timed!("GetAllLinkMessagesByFid", get_all_link_messages_by_fid)
            }
            FidMessages::AllVerifications => {
                timed!(
                    "GetAllVerificationMessagesByFid",
                    get_all_verification_messages_by_fid
                )
            }
            FidMessages::AllUserData => timed!(
                "GetAllUserDataMessagesByFid",
                get_all_user_data_messages_by_fid
            ),
            FidMessages::AllLendStorage => {
                timed!(
                    "GetAllLendStorageMessagesByFid",
                    get_all_lend_storage_messages_by_fid
                )
            }
            FidMessages::Casts => plain!("GetCastsByFid", get_casts_by_fid),
            FidMessages::CastsByMention => plain!("GetCastsByMention", get_casts_by_mention),
            FidMessages::UserData => plain!("GetUserDataByFid", get_user_data_by_fid),
            FidMessages::Verifications => plain!("GetVerificationsByFid", get_verifications_by_fid),
            FidMessages::LinkCompactState => {
                plain!(
                    "GetLinkCompactStateMessageByFid",
                    get_link_compact_state_message_by_fid
                )
            }
        }
    }

    /// Every message of a per-FID list, collected.
    pub async fn fid_messages(
        &self,
        list: FidMessages,
        fid: u64,
        page_size: u32,
    ) -> Result<Vec<Message>, HubError> {
        let mut pages = self.fid_message_pages(list, fid, page_size);
        let mut messages = Vec::new();
        while let Some(page) = futures::StreamExt::next(&mut pages).await {
            messages.extend(page?);
        }
        Ok(messages)
    }

    pub async fn get_cast(&self, fid: u64, hash: Vec<u8>) -> Result<Message, HubError> {
        self.unary(
            "GetCast",
            CastId { fid, hash },
            |mut rpc, request| async move { rpc.get_cast(request).await },
        )
        .await
    }

    pub async fn casts_by_parent(
        &self,
        request: CastsByParentRequest,
    ) -> Result<MessagesResponse, HubError> {
        self.unary("GetCastsByParent", request, |mut rpc, request| async move {
            rpc.get_casts_by_parent(request).await
        })
        .await
    }

    pub async fn get_reaction(&self, request: ReactionRequest) -> Result<Message, HubError> {
        self.unary("GetReaction", request, |mut rpc, request| async move {
            rpc.get_reaction(request).await
        })
        .await
    }

    pub async fn reactions_by_fid(
        &self,
        request: ReactionsByFidRequest,
    ) -> Result<MessagesResponse, HubError> {
        self.unary(
            "GetReactionsByFid",
            request,
            |mut rpc, request| async move { rpc.get_reactions_by_fid(request).await },
        )
        .await
    }

    pub async fn reactions_by_cast(
        &self,
        request: ReactionsByTargetRequest,
    ) -> Result<MessagesResponse, HubError> {
        self.unary(
            "GetReactionsByCast",
            request,
            |mut rpc, request| async move { rpc.get_reactions_by_cast(request).await },
        )
        .await
    }

    pub async fn reactions_by_target(
        &self,
        request: ReactionsByTargetRequest,
    ) -> Result<MessagesResponse, HubError> {
        self.unary(
            "GetReactionsByTarget",
            request,
            |mut rpc, request| async move { rpc.get_reactions_by_target(request).await },
        )
        .await
    }

    pub async fn get_link(&self, request: LinkRequest) -> Result<Message, HubError> {
        self.unary("GetLink", request, |mut rpc, request| async move {
            rpc.get_link(request).await
        })
        .await
    }

    pub async fn links_by_fid(
        &self,
        request: LinksByFidRequest,
    ) -> Result<MessagesResponse, HubError> {
        self.unary("GetLinksByFid", request, |mut rpc, request| async move {
            rpc.get_links_by_fid(request).await
        })
        .await
    }

    pub async fn links_by_target(
        &self,
        request: LinksByTargetRequest,
    ) -> Result<MessagesResponse, HubError> {
        self.unary("GetLinksByTarget", request, |mut rpc, request| async move {
            rpc.get_links_by_target(request).await
        })
        .await
    }

    pub async fn get_user_data(&self, request: UserDataRequest) -> Result<Message, HubError> {
        self.unary("GetUserData", request, |mut rpc, request| async move {
            rpc.get_user_data(request).await
        })
        .await
    }

    pub async fn get_verification(
        &self,
        request: VerificationRequest,
    ) -> Result<Message, HubError> {
        self.unary("GetVerification", request, |mut rpc, request| async move {
            rpc.get_verification(request).await
        })
        .await
    }

    /// Every on-chain event of one type for a fid. The node ignores paging here and answers
    /// everything at once; a next-page token, should one come, is followed anyway.
    pub async fn onchain_events(
        &self,
        fid: u64,
        event_type: i32,
    ) -> Result<OnChainEventResponse, HubError> {
        let mut events = Vec::new();
        let mut token: Option<Vec<u8>> = None;
        loop {
            let request = OnChainEventRequest {
                fid,
                event_type,
                page_size: None,
                page_token: token.clone(),
                reverse: None,
            };
            let page = self
                .unary("GetOnChainEvents", request, |mut rpc, request| async move {
                    rpc.get_on_chain_events(request).await
                })
                .await?;
            events.extend(page.events);
            match next_token(page.next_page_token, token.as_deref(), "GetOnChainEvents")? {
                Some(next) => token = Some(next),
                None => {
                    return Ok(OnChainEventResponse {
                        events,
                        next_page_token: None,
                    });
                }
            }
        }
    }

    pub async fn id_registry_event(&self, fid: u64) -> Result<OnChainEvent, HubError> {
        let request = FidRequest {
            fid,
            page_size: None,
            page_token: None,
            reverse: None,
        };
        self.unary(
            "GetIdRegistryOnChainEvent",
            request,
            |mut rpc, request| async move { rpc.get_id_registry_on_chain_event(request).await },
        )
        .await
    }

    /// The fid's username proofs, deduplicated by name (fname transfers are mirrored to every
    /// shard, so the node may list one twice).
    pub async fn username_proofs(&self, fid: u64) -> Result<Vec<UserNameProof>, HubError> {
        let request = FidRequest {
            fid,
            page_size: None,
            page_token: None,
            reverse: None,
        };
        let response: UsernameProofsResponse = self
            .unary(
                "GetUserNameProofsByFid",
                request,
                |mut rpc, request| async move { rpc.get_user_name_proofs_by_fid(request).await },
            )
            .await?;
        let mut proofs: Vec<UserNameProof> = Vec::with_capacity(response.proofs.len());
        for proof in response.proofs {
            match proofs.iter_mut().find(|known| known.name == proof.name) {
                Some(known) if known.timestamp < proof.timestamp => *known = proof,
                Some(_) => {}
                None => proofs.push(proof),
            }
        }
        Ok(proofs)
    }

    pub async fn username_proof(&self, name: Vec<u8>) -> Result<UserNameProof, HubError> {
        self.unary(
            "GetUsernameProof",
            UsernameProofRequest { name },
            |mut rpc, request| async move { rpc.get_username_proof(request).await },
        )
        .await
    }
}

impl Client {
    /// The token of the page after one that answered `next` to the token `sent`: `None` when
    /// the list is over (no token, an empty one, or a cross-shard token whose shards are all
    /// done); an error when the token did not move.
    pub fn next_page_token(
        next: Option<Vec<u8>>,
        sent: Option<&[u8]>,
        method: &'static str,
    ) -> Result<Option<Vec<u8>>, HubError> {
        next_token(next, sent, method)
    }
}

/// The per-FID message lists [`Client::fid_message_pages`] can walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FidMessages {
    AllCasts,
    AllReactions,
    AllLinks,
    AllVerifications,
    AllUserData,
    AllLendStorage,
    Casts,
    CastsByMention,
    UserData,
    Verifications,
    LinkCompactState,
}

impl FidMessages {
    /// The gRPC method of the list.
    pub fn method(self) -> &'static str {
        match self {
            FidMessages::AllCasts => "GetAllCastMessagesByFid",
            FidMessages::AllReactions => "GetAllReactionMessagesByFid",
            FidMessages::AllLinks => "GetAllLinkMessagesByFid",
            FidMessages::AllVerifications => "GetAllVerificationMessagesByFid",
            FidMessages::AllUserData => "GetAllUserDataMessagesByFid",
            FidMessages::AllLendStorage => "GetAllLendStorageMessagesByFid",
            FidMessages::Casts => "GetCastsByFid",
            FidMessages::CastsByMention => "GetCastsByMention",
            FidMessages::UserData => "GetUserDataByFid",
            FidMessages::Verifications => "GetVerificationsByFid",
            FidMessages::LinkCompactState => "GetLinkCompactStateMessageByFid",
        }
    }
}

/// Whether a cross-shard page token (the node's JSON array of one token per shard) says every
/// shard is done. The node always returns such a token, and all nulls is its end.
fn all_shards_done(token: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<serde_json::Value>(token),
        Ok(serde_json::Value::Array(entries)) if entries.iter().all(serde_json::Value::is_null)
    )
}

/// The token of the next page: None when the list is over (no token, an empty one, or a
/// cross-shard token whose shards are all done). A
/// token equal to the one just sent would page forever, and stopping there would take a
/// partial list for the whole: an error.
fn next_token(
    next: Option<Vec<u8>>,
    sent: Option<&[u8]>,
    method: &'static str,
) -> Result<Option<Vec<u8>>, HubError> {
    match next {
        Some(next) if !next.is_empty() && !all_shards_done(&next) => {
            if sent == Some(next.as_slice()) {
                return Err(HubError::Protocol {
                    method,
                    message: "the hub answered the page token it was sent; the list cannot be read to its end".into(),
                });
            }
            Ok(Some(next))
        }
        _ => Ok(None),
    }
}

/// Decodes one HubEvent.
pub fn decode_event(bytes: &[u8]) -> Result<HubEvent, HubError> {
    <HubEvent as prost::Message>::decode(bytes).map_err(|error| HubError::Decode {
        what: "HubEvent",
        message: error.to_string(),
    })
}

/// Whether `GetEvents` has more pages. Its token is a JSON array with one entry per shard and
/// is always returned: the walk is over when every entry is null (or the token is absent,
/// empty, or did not move).
fn events_token_continues(next: Option<&[u8]>, previous: Option<&[u8]>) -> bool {
    let Some(next) = next.filter(|next| !next.is_empty()) else {
        return false;
    };
    if previous == Some(next) {
        return false;
    }
    match serde_json::from_slice::<serde_json::Value>(next) {
        Ok(serde_json::Value::Array(entries)) => entries.iter().any(|entry| !entry.is_null()),
        Ok(serde_json::Value::Null) => false,
        // Not JSON: an opaque token from another node version; follow it.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_that_does_not_move_is_an_error_not_the_end() {
        assert_eq!(next_token(None, None, "GetFids").unwrap(), None);
        assert_eq!(
            next_token(Some(Vec::new()), Some(b"a"), "GetFids").unwrap(),
            None
        );
        assert_eq!(
            next_token(Some(b"b".to_vec()), Some(b"a"), "GetFids").unwrap(),
            Some(b"b".to_vec())
        );
        // Cross-shard lists end with every shard's token null, repeated or not.
        let done = b"[null,null]".to_vec();
        assert_eq!(
            next_token(Some(done.clone()), Some(&done), "GetCastsByMention").unwrap(),
            None
        );
        assert!(
            next_token(Some(b"[[1],null]".to_vec()), None, "GetCastsByMention")
                .unwrap()
                .is_some()
        );
        let error = next_token(Some(b"a".to_vec()), Some(b"a"), "GetAllCastMessagesByFid")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("GetAllCastMessagesByFid") && error.contains("page token"),
            "{error}"
        );
    }

    #[test]
    fn events_tokens_end_when_every_shard_is_done() {
        assert!(!events_token_continues(None, None));
        assert!(!events_token_continues(Some(b""), None));
        assert!(!events_token_continues(Some(b"[null]"), None));
        assert!(!events_token_continues(Some(b"[null,null]"), None));
        assert!(events_token_continues(Some(b"[[1,2,3],null]"), None));
        assert!(events_token_continues(Some(b"[\"abc\"]"), None));
        assert!(
            !events_token_continues(Some(b"[\"abc\"]"), Some(b"[\"abc\"]")),
            "a token that does not move ends the walk"
        );
        assert!(events_token_continues(Some(b"\x01\x02"), None));
    }

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts: 10,
        };
        assert!(policy.delay(1) <= Duration::from_millis(100));
        assert!(policy.delay(1) >= Duration::from_millis(50));
        assert!(policy.delay(3) >= Duration::from_millis(200));
        assert!(policy.delay(30) <= Duration::from_secs(2));
    }

    #[test]
    fn options_are_checked_up_front() {
        let options = |uri: &str, headers: Vec<(String, String)>| ClientOptions {
            uri: uri.into(),
            tls: false,
            headers,
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_message_size: 1 << 20,
            retry: RetryPolicy {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(1),
                max_attempts: 1,
            },
            max_concurrent_requests: 1,
            max_requests_per_second: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        assert!(
            Client::new(options(
                "http://127.0.0.1:1",
                vec![("x-api-key".into(), "k".into())]
            ))
            .is_ok()
        );
        let error = Client::new(options("not a uri", vec![]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.starts_with("hub.url"), "{error}");
        let error = Client::new(options("http://h:1", vec![("bad name".into(), "v".into())]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("hub.headers") && error.contains("bad name"),
            "{error}"
        );
        let error = Client::new(options(
            "http://h:1",
            vec![("x-key".into(), "line\nbreak".into())],
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("x-key"), "{error}");
    }
}
