//! The dev hub over real gRPC on an ephemeral port, read with the generated tonic client:
//! every RPC answers as the Snapchain reference says, the data verifies, the event log is
//! consistent with its BLOCK_CONFIRMED counts, and every fault shows up on the wire.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Code, Request};
use waypoint::devhub::{DevHub, DevHubHandle, DevHubOptions, Faults};
use waypoint::hub::ids;
use waypoint::replica::ReplicaState;
use waypoint_proto::hub_service_client::HubServiceClient;
use waypoint_proto::{
    CastId, CastsByParentRequest, EventRequest, EventsRequest, FidRequest, FidTimestampRequest,
    FidsRequest, GetInfoRequest, HubEvent, HubEventType, LinkRequest, LinksByTargetRequest,
    Message, MessageData, MessageType, MessagesResponse, OnChainEventRequest, OnChainEventType,
    ReactionRequest, ReactionsByTargetRequest, SubscribeRequest, UserDataRequest,
    UsernameProofRequest, VerificationRequest, casts_by_parent_request, hub_event, link_request,
    message_data, on_chain_event, reaction_request, reactions_by_target_request,
};

type Client = HubServiceClient<Channel>;

const ALL_EVENT_TYPES: [HubEventType; 7] = [
    HubEventType::MergeMessage,
    HubEventType::PruneMessage,
    HubEventType::RevokeMessage,
    HubEventType::MergeUsernameProof,
    HubEventType::MergeOnChainEvent,
    HubEventType::MergeFailure,
    HubEventType::BlockConfirmed,
];

fn small_options() -> DevHubOptions {
    DevHubOptions {
        num_fids: 40,
        seed: 7,
        num_shards: 2,
        messages_per_fid: 40,
        ..DevHubOptions::default()
    }
}

async fn start(options: DevHubOptions) -> (DevHubHandle, Client) {
    let hub = DevHub::build(options).expect("build");
    let handle = hub
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let client = connect(&handle.url()).await;
    (handle, client)
}

async fn connect(url: &str) -> Client {
    HubServiceClient::connect(url.to_string())
        .await
        .expect("connect")
        .max_decoding_message_size(64 * 1024 * 1024)
}

fn data(message: &Message) -> &MessageData {
    message.data.as_ref().expect("message data")
}

fn all_event_types() -> Vec<i32> {
    ALL_EVENT_TYPES.iter().map(|t| *t as i32).collect()
}

/// Checks hash and signature the way a consumer must: BLAKE3 of data_bytes, ed25519
/// verify_strict over the 20-byte hash.
fn verify(message: &Message) -> Result<(), String> {
    let bytes = message
        .data_bytes
        .as_ref()
        .filter(|bytes| !bytes.is_empty())
        .ok_or("no data_bytes")?;
    let digest = blake3::hash(bytes);
    let hash = &digest.as_bytes()[..20];
    if hash != message.hash.as_slice() {
        return Err("hash mismatch".into());
    }
    let key: [u8; 32] = message
        .signer
        .as_slice()
        .try_into()
        .map_err(|_| "signer length")?;
    let signature: [u8; 64] = message
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| "signature length")?;
    VerifyingKey::from_bytes(&key)
        .map_err(|error| error.to_string())?
        .verify_strict(&message.hash, &Signature::from_bytes(&signature))
        .map_err(|_| "bad signature".to_string())?;
    if message.hash_scheme != 1 || message.signature_scheme != 1 {
        return Err("schemes".into());
    }
    Ok(())
}

/// Pages a GetAll* RPC to the end; also checks the paging contract on the way.
async fn get_all(client: &mut Client, fid: u64, set: &str, page_size: Option<u32>) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut token: Option<Vec<u8>> = None;
    loop {
        let request = FidTimestampRequest {
            fid,
            page_size,
            page_token: token.clone(),
            reverse: None,
            start_timestamp: None,
            stop_timestamp: None,
        };
        let response: MessagesResponse = match set {
            "casts" => client.get_all_cast_messages_by_fid(request).await,
            "reactions" => client.get_all_reaction_messages_by_fid(request).await,
            "links" => client.get_all_link_messages_by_fid(request).await,
            "verifications" => client.get_all_verification_messages_by_fid(request).await,
            "user_data" => client.get_all_user_data_messages_by_fid(request).await,
            other => panic!("unknown set {other}"),
        }
        .expect("get all")
        .into_inner();
        let full = response.messages.len() as u32 == page_size.unwrap_or(1000);
        assert_eq!(
            response.next_page_token.is_some(),
            full,
            "a token comes exactly when the page filled up"
        );
        messages.extend(response.messages);
        match response.next_page_token {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => break,
        }
    }
    messages
}

fn add_types(set: &str) -> Vec<i32> {
    let types: &[MessageType] = match set {
        "casts" => &[MessageType::CastAdd],
        "reactions" => &[MessageType::ReactionAdd],
        "links" => &[MessageType::LinkAdd],
        "verifications" => &[MessageType::VerificationAddEthAddress],
        "user_data" => &[MessageType::UserDataAdd],
        _ => &[],
    };
    types.iter().map(|t| *t as i32).collect()
}

/// Live add hashes per fid and set, from the dump.
fn live_adds(dump: &ReplicaState) -> HashMap<(u64, &'static str), BTreeSet<String>> {
    let mut out: HashMap<(u64, &'static str), BTreeSet<String>> = HashMap::new();
    for row in dump.casts.iter().filter(|r| r.live) {
        out.entry((row.fid, "casts"))
            .or_default()
            .insert(row.hash.clone());
    }
    for row in dump.reactions.iter().filter(|r| r.live) {
        out.entry((row.fid, "reactions"))
            .or_default()
            .insert(row.hash.clone());
    }
    for row in dump.links.iter().filter(|r| r.live) {
        out.entry((row.fid, "links"))
            .or_default()
            .insert(row.hash.clone());
    }
    for row in dump.verifications.iter().filter(|r| r.live) {
        out.entry((row.fid, "verifications"))
            .or_default()
            .insert(row.hash.clone());
    }
    for row in dump.user_data.iter().filter(|r| r.live) {
        out.entry((row.fid, "user_data"))
            .or_default()
            .insert(row.hash.clone());
    }
    out
}

/// Every event of a shard, through GetEvents pages.
async fn all_events(
    client: &mut Client,
    shard: u32,
    start_id: u64,
    page_size: u32,
) -> Vec<HubEvent> {
    let mut events = Vec::new();
    let mut token: Option<Vec<u8>> = None;
    loop {
        let response = client
            .get_events(EventsRequest {
                start_id,
                shard_index: Some(shard),
                stop_id: None,
                page_size: Some(page_size),
                page_token: token.clone(),
                reverse: None,
            })
            .await
            .expect("get events")
            .into_inner();
        events.extend(response.events);
        let next = response
            .next_page_token
            .expect("GetEvents always returns a token");
        let tokens: Vec<Option<Vec<u8>>> = serde_json::from_slice(&next).expect("json token");
        assert_eq!(tokens.len(), 1, "one entry per requested shard");
        if tokens.iter().all(Option::is_none) {
            break;
        }
        token = Some(next);
    }
    events
}

/// Groups events by block and checks each block against its BLOCK_CONFIRMED.
fn check_blocks(events: &[HubEvent], shard: u32) -> usize {
    let mut blocks: BTreeMap<u64, Vec<&HubEvent>> = BTreeMap::new();
    for event in events {
        assert_eq!(event.shard_index, shard);
        assert_eq!(event.block_number, ids::event_block(event.id));
        assert!(event.timestamp > 0, "event timestamp filled in");
        blocks
            .entry(ids::event_block(event.id))
            .or_default()
            .push(event);
    }
    let numbers: Vec<u64> = blocks.keys().copied().collect();
    assert!(
        numbers.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "block numbers go up by one"
    );
    for (number, block) in &blocks {
        let first = block[0];
        assert_eq!(first.r#type, HubEventType::BlockConfirmed as i32);
        assert_eq!(ids::event_seq(first.id), 0);
        let Some(hub_event::Body::BlockConfirmedBody(body)) = first.body.as_ref() else {
            panic!("block confirmed without body");
        };
        assert_eq!(body.block_number, *number);
        assert_eq!(body.shard_index, shard);
        assert_eq!(body.timestamp, first.timestamp);
        assert_eq!(body.block_hash.len(), 32);
        assert_eq!(body.total_events, block.len() as u64);
        assert_eq!(body.max_block_event_seqnum, block.len() as u64 - 1);
        let mut counts: HashMap<i32, u64> = HashMap::new();
        for event in block {
            *counts.entry(event.r#type).or_default() += 1;
        }
        assert_eq!(counts, body.event_counts_by_type, "block {number}");
        for (seq, event) in block.iter().enumerate() {
            assert_eq!(ids::event_seq(event.id), seq as u64);
            assert_eq!(event.timestamp, first.timestamp);
        }
    }
    blocks.len()
}

async fn next_event(
    stream: &mut tonic::Streaming<HubEvent>,
) -> Option<Result<HubEvent, tonic::Status>> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("event within 10 s")
        .transpose()
}

fn subscribe_request(shard: Option<u32>, from_id: Option<u64>) -> SubscribeRequest {
    SubscribeRequest {
        event_types: all_event_types(),
        from_id,
        shard_index: shard,
    }
}

fn merge_message(event: &HubEvent) -> Option<&waypoint_proto::MergeMessageBody> {
    match event.body.as_ref()? {
        hub_event::Body::MergeMessageBody(body) => Some(body),
        _ => None,
    }
}

#[tokio::test]
async fn get_info_and_fids() {
    let (hub, mut client) = start(small_options()).await;
    let info = client
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.num_shards, 2);
    assert_eq!(info.version, "0.14.2");
    let shard_ids: Vec<u32> = info.shard_infos.iter().map(|s| s.shard_id).collect();
    assert_eq!(shard_ids, vec![0, 1, 2]);
    let stats = info.db_stats.unwrap();
    assert_eq!(stats.num_fid_registrations, 40);
    assert!(stats.num_messages > 40 * 10);
    for info in &info.shard_infos[1..] {
        assert_eq!(
            info.max_height,
            ids::event_block(hub.last_event_id(info.shard_id))
        );
    }

    let mut seen = BTreeSet::new();
    for shard in 1..=2 {
        let mut token = None;
        let mut fids = Vec::new();
        loop {
            let response = client
                .get_fids(FidsRequest {
                    page_size: Some(3),
                    page_token: token.clone(),
                    reverse: None,
                    shard_id: shard,
                })
                .await
                .unwrap()
                .into_inner();
            fids.extend(response.fids);
            match response.next_page_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        assert!(fids.windows(2).all(|pair| pair[0] < pair[1]), "ascending");
        for fid in &fids {
            assert_eq!(ids::shard_for_fid(*fid, 2), Some(shard));
            assert!(seen.insert(*fid), "fid {fid} listed twice");
        }
    }
    assert_eq!(seen, (1..=40).collect::<BTreeSet<u64>>());
    let error = client
        .get_fids(FidsRequest {
            page_size: None,
            page_token: None,
            reverse: None,
            shard_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    hub.shutdown().await;
}

#[tokio::test]
async fn get_all_pages_return_the_current_store_exactly_once() {
    let (hub, mut client) = start(small_options()).await;
    let dump = hub.dump_state();
    let expected = live_adds(&dump);
    let mut saw_empty_last_page = false;
    for fid in 1..=40u64 {
        for set in ["casts", "reactions", "links", "verifications", "user_data"] {
            let whole = get_all(&mut client, fid, set, None).await;
            let paged = get_all(&mut client, fid, set, Some(3)).await;
            assert_eq!(whole, paged, "fid {fid} {set}: paging changes nothing");
            let keys: Vec<(u32, Vec<u8>)> = whole
                .iter()
                .map(|m| (data(m).timestamp, m.hash.clone()))
                .collect();
            assert!(
                keys.windows(2).all(|pair| pair[0] < pair[1]),
                "ascending by (timestamp, hash), no duplicates"
            );
            let adds: BTreeSet<String> = whole
                .iter()
                .filter(|m| add_types(set).contains(&data(m).r#type))
                .map(|m| hex::encode(&m.hash))
                .collect();
            let wanted = expected.get(&(fid, set)).cloned().unwrap_or_default();
            assert_eq!(adds, wanted, "fid {fid} {set}: the live adds of the dump");
            for message in &whole {
                assert_eq!(data(message).fid, fid);
            }
            // A page that ends exactly on the last row carries a token, then an empty page.
            if !whole.is_empty() {
                let exact = get_all(&mut client, fid, set, Some(whole.len() as u32)).await;
                assert_eq!(exact, whole);
                saw_empty_last_page = true;
            }
        }
    }
    assert!(saw_empty_last_page);

    // Reverse order and inclusive Farcaster-second bounds.
    let casts = get_all(&mut client, 3, "casts", None).await;
    let first = data(&casts[1]).timestamp;
    let last = data(&casts[casts.len() - 2]).timestamp;
    let bounded = client
        .get_all_cast_messages_by_fid(FidTimestampRequest {
            fid: 3,
            page_size: None,
            page_token: None,
            reverse: Some(true),
            start_timestamp: Some(u64::from(first)),
            stop_timestamp: Some(u64::from(last)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut expected: Vec<Message> = casts
        .iter()
        .filter(|m| (first..=last).contains(&data(m).timestamp))
        .cloned()
        .collect();
    expected.reverse();
    assert_eq!(bounded.messages, expected);
    hub.shutdown().await;
}

#[tokio::test]
async fn removed_adds_are_gone_and_removes_are_served() {
    let (hub, mut client) = start(small_options()).await;
    let dump = hub.dump_state();
    let removed_cast = dump.casts.iter().find(|r| !r.live).expect("a removed cast");
    let casts = get_all(&mut client, removed_cast.fid, "casts", None).await;
    assert!(
        casts
            .iter()
            .all(|m| hex::encode(&m.hash) != removed_cast.hash)
    );
    assert!(casts.iter().any(|m| matches!(
        data(m).body.as_ref(),
        Some(message_data::Body::CastRemoveBody(body)) if hex::encode(&body.target_hash) == removed_cast.hash
    )));
    let error = client
        .get_cast(CastId {
            fid: removed_cast.fid,
            hash: hex::decode(&removed_cast.hash).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);

    let unliked = dump
        .reactions
        .iter()
        .find(|r| !r.live)
        .expect("a removed reaction");
    let reactions = get_all(&mut client, unliked.fid, "reactions", None).await;
    assert!(
        reactions
            .iter()
            .all(|m| hex::encode(&m.hash) != unliked.hash)
    );
    assert!(
        reactions
            .iter()
            .any(|m| data(m).r#type == MessageType::ReactionRemove as i32)
    );
    let unfollowed = dump.links.iter().find(|r| !r.live).expect("a removed link");
    let links = get_all(&mut client, unfollowed.fid, "links", None).await;
    assert!(
        links
            .iter()
            .all(|m| hex::encode(&m.hash) != unfollowed.hash)
    );
    assert!(
        dump.verifications.iter().any(|r| !r.live),
        "a removed verification"
    );
    // User data is one row per (fid, type): overwritten values are not rows.
    let keys: HashSet<(u64, i32)> = dump
        .user_data
        .iter()
        .map(|r| (r.fid, r.user_data_type))
        .collect();
    assert_eq!(keys.len(), dump.user_data.len());
    hub.shutdown().await;
}

#[tokio::test]
async fn every_message_verifies_and_is_valid() {
    let (hub, mut client) = start(small_options()).await;
    let mut num_checked = 0;
    let mut saw = HashSet::new();
    for fid in 1..=40u64 {
        let signers = client
            .get_on_chain_events(OnChainEventRequest {
                fid,
                event_type: OnChainEventType::Signer as i32,
                page_size: Some(1),
                page_token: None,
                reverse: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(signers.next_page_token.is_none(), "paging is ignored");
        let keys: Vec<Vec<u8>> = signers
            .events
            .iter()
            .filter_map(|event| match event.body.as_ref() {
                Some(on_chain_event::Body::SignerEventBody(body)) => {
                    assert_eq!(body.key_type, 1);
                    Some(body.key.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(keys.len(), 1);
        for event_type in [OnChainEventType::IdRegister, OnChainEventType::StorageRent] {
            let events = client
                .get_on_chain_events(OnChainEventRequest {
                    fid,
                    event_type: event_type as i32,
                    page_size: None,
                    page_token: None,
                    reverse: None,
                })
                .await
                .unwrap()
                .into_inner()
                .events;
            assert!(!events.is_empty());
            for event in events {
                assert_eq!(event.chain_id, 10);
                assert_eq!(event.transaction_hash.len(), 32);
                assert!(event.block_timestamp > ids::FARCASTER_EPOCH_UNIX_SECONDS);
            }
        }
        for set in ["casts", "reactions", "links", "verifications", "user_data"] {
            for message in get_all(&mut client, fid, set, None).await {
                verify(&message).unwrap_or_else(|error| panic!("fid {fid}: {error}"));
                assert_eq!(message.signer, keys[0], "signed by the fid's on-chain key");
                let decoded = MessageData::decode(message.data_bytes.as_deref().unwrap()).unwrap();
                assert_eq!(
                    Some(&decoded),
                    message.data.as_ref(),
                    "data matches data_bytes"
                );
                assert_eq!(decoded.network, 1);
                match decoded.body.as_ref() {
                    Some(message_data::Body::CastAddBody(cast)) => {
                        let limit = if cast.r#type == 1 { 1024 } else { 320 };
                        assert!(cast.text.len() <= limit);
                        if cast.r#type == 1 {
                            assert!(cast.text.len() >= 321);
                            saw.insert("long");
                        }
                        assert!(cast.embeds.len() <= 4);
                        assert!(cast.mentions.len() <= 10);
                        assert_eq!(cast.mentions.len(), cast.mentions_positions.len());
                        assert!(
                            cast.mentions_positions
                                .iter()
                                .all(|p| *p as usize <= cast.text.len())
                        );
                        assert!(!cast.text.is_empty() || !cast.embeds.is_empty());
                        if cast.text.contains('\0') {
                            saw.insert("nul");
                        }
                        if cast.parent.is_some() {
                            saw.insert("parent");
                        }
                    }
                    Some(message_data::Body::CastRemoveBody(body)) => {
                        assert_eq!(body.target_hash.len(), 20)
                    }
                    Some(message_data::Body::LinkBody(body)) => {
                        assert!((1..=8).contains(&body.r#type.len()))
                    }
                    Some(message_data::Body::UserDataBody(body)) => {
                        let limit = match body.r#type {
                            2 => 32,
                            6 => 16,
                            8 => 15,
                            _ => 256,
                        };
                        assert!(body.value.len() <= limit, "{body:?}");
                        if body.r#type == 6 {
                            saw.insert("username");
                        }
                    }
                    Some(message_data::Body::VerificationAddAddressBody(body)) => {
                        let expected = if body.protocol == 1 { 32 } else { 20 };
                        assert_eq!(body.address.len(), expected);
                    }
                    _ => {}
                }
                num_checked += 1;
            }
        }
    }
    assert!(num_checked > 400, "{num_checked}");
    assert!(saw.contains("parent"), "{saw:?}");
    assert!(saw.contains("username"), "{saw:?}");
    hub.shutdown().await;
}

#[tokio::test]
async fn event_log_blocks_match_their_counts() {
    let (hub, mut client) = start(small_options()).await;
    for shard in 1..=2 {
        let events = all_events(&mut client, shard, 0, 97).await;
        assert_eq!(events.last().unwrap().id, hub.last_event_id(shard));
        let num_blocks = check_blocks(&events, shard);
        assert!(num_blocks > 2);
        let types: HashSet<i32> = events.iter().map(|e| e.r#type).collect();
        for wanted in [
            HubEventType::MergeMessage,
            HubEventType::MergeOnChainEvent,
            HubEventType::MergeUsernameProof,
        ] {
            assert!(
                types.contains(&(wanted as i32)),
                "{wanted:?} on shard {shard}"
            );
        }
        // Superseded messages are listed as deleted.
        assert!(
            events
                .iter()
                .filter_map(merge_message)
                .any(|body| !body.deleted_messages.is_empty())
        );
        // GetEvent: present, then missing (INTERNAL), then a bad shard (INVALID_ARGUMENT).
        let some = &events[events.len() / 2];
        let got = client
            .get_event(EventRequest {
                id: some.id,
                shard_index: shard,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&got, some);
        let missing = client
            .get_event(EventRequest {
                id: hub.last_event_id(shard) + 1,
                shard_index: shard,
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::Internal);
        // start inclusive, stop exclusive.
        let block = ids::event_block(some.id);
        let range = client
            .get_events(EventsRequest {
                start_id: ids::block_start_id(block),
                shard_index: Some(shard),
                stop_id: Some(ids::block_start_id(block + 1)),
                page_size: None,
                page_token: None,
                reverse: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(range.events.iter().all(|e| ids::event_block(e.id) == block));
        assert_eq!(range.events[0].id, ids::block_start_id(block));
        let tokens: Vec<Option<Vec<u8>>> =
            serde_json::from_slice(&range.next_page_token.unwrap()).unwrap();
        assert_eq!(tokens, vec![None]);
    }
    let bad = client
        .get_event(EventRequest {
            id: 1,
            shard_index: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // Without a shard: a token entry per shard.
    let both = client
        .get_events(EventsRequest {
            start_id: 0,
            shard_index: None,
            stop_id: None,
            page_size: Some(5),
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(both.events.len(), 10);
    let tokens: Vec<Option<Vec<u8>>> =
        serde_json::from_slice(&both.next_page_token.unwrap()).unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(Option::is_some));
    hub.shutdown().await;
}

#[tokio::test]
async fn subscribe_replays_from_an_id_then_streams_live_blocks() {
    let (hub, mut client) = start(small_options()).await;
    let shard = 1;
    let history = all_events(&mut client, shard, 0, 1000).await;
    let from = history[history.len() - 30].id;
    let mut stream = client
        .subscribe(subscribe_request(Some(shard), Some(from)))
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    while replayed.len() < 30 {
        replayed.push(next_event(&mut stream).await.unwrap().unwrap());
    }
    assert_eq!(replayed[0].id, from, "from_id is inclusive");
    assert_eq!(replayed, history[history.len() - 30..].to_vec());

    hub.append_live(25);
    let last = hub.last_event_id(shard);
    let mut live = Vec::new();
    while live.last().is_none_or(|e: &HubEvent| e.id < last) {
        live.push(next_event(&mut stream).await.unwrap().unwrap());
    }
    assert_eq!(live[0].r#type, HubEventType::BlockConfirmed as i32);
    assert_eq!(
        ids::event_block(live[0].id),
        ids::event_block(history.last().unwrap().id) + 1
    );
    check_blocks(&live, shard);
    for event in &live {
        if let Some(body) = merge_message(event) {
            verify(body.message.as_ref().unwrap()).unwrap();
        }
    }

    // Without from_id: live only. With an empty type list: nothing at all.
    let mut live_only = client
        .subscribe(subscribe_request(Some(2), None))
        .await
        .unwrap()
        .into_inner();
    let mut nothing = client
        .subscribe(SubscribeRequest {
            event_types: vec![],
            from_id: Some(0),
            shard_index: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    hub.append_live(5);
    let first = next_event(&mut live_only).await.unwrap().unwrap();
    assert_eq!(first.r#type, HubEventType::BlockConfirmed as i32);
    assert_eq!(
        ids::event_block(first.id),
        ids::event_block(hub.last_event_id(2))
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), nothing.message()).await;
    assert!(quiet.is_err(), "an empty event_types list streams nothing");

    for bad_shard in [0, 3] {
        let error = client
            .subscribe(subscribe_request(Some(bad_shard), None))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unknown);
        assert_eq!(error.message(), "Invalid shard id");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn point_lookups_and_indexes() {
    let (hub, mut client) = start(small_options()).await;
    let dump = hub.dump_state();

    let cast = dump.casts.iter().find(|r| r.live).unwrap();
    let got = client
        .get_cast(CastId {
            fid: cast.fid,
            hash: hex::decode(&cast.hash).unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex::encode(&got.hash), cast.hash);

    let user_data = dump.user_data.iter().find(|r| r.live).unwrap();
    let got = client
        .get_user_data(UserDataRequest {
            fid: user_data.fid,
            user_data_type: user_data.user_data_type,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex::encode(&got.hash), user_data.hash);
    let missing = client
        .get_user_data(UserDataRequest {
            fid: user_data.fid,
            user_data_type: 14,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let link = dump.links.iter().find(|r| r.live).unwrap();
    let got = client
        .get_link(LinkRequest {
            fid: link.fid,
            link_type: link.link_type.clone(),
            target: Some(link_request::Target::TargetFid(link.target_fid)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex::encode(&got.hash), link.hash);

    let reaction = dump
        .reactions
        .iter()
        .find(|r| r.live && r.target_cast_hash.is_some())
        .unwrap();
    let target = CastId {
        fid: reaction.target_cast_fid.unwrap(),
        hash: hex::decode(reaction.target_cast_hash.as_ref().unwrap()).unwrap(),
    };
    let got = client
        .get_reaction(ReactionRequest {
            fid: reaction.fid,
            reaction_type: reaction.reaction_type,
            target: Some(reaction_request::Target::TargetCastId(target.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex::encode(&got.hash), reaction.hash);

    let verification = dump.verifications.iter().find(|r| r.live).unwrap();
    let got = client
        .get_verification(VerificationRequest {
            fid: verification.fid,
            address: hex::decode(&verification.address).unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex::encode(&got.hash), verification.hash);

    let proof_row = dump.username_proofs.iter().find(|r| r.live).unwrap();
    let proof = client
        .get_username_proof(UsernameProofRequest {
            name: proof_row.name.as_bytes().to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proof.fid, proof_row.fid);
    assert_eq!(proof.owner.len(), 20);
    let missing = client
        .get_username_proof(UsernameProofRequest {
            name: b"nobody-here".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // Fname proofs are mirrored to every shard: one copy per shard.
    let proofs = client
        .get_user_name_proofs_by_fid(FidRequest {
            fid: proof_row.fid,
            page_size: None,
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner()
        .proofs;
    assert_eq!(proofs.len(), 2);
    assert_eq!(proofs[0], proofs[1]);

    let register = client
        .get_id_registry_on_chain_event(FidRequest {
            fid: 5,
            page_size: None,
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(register.fid, 5);
    let missing = client
        .get_id_registry_on_chain_event(FidRequest {
            fid: 999,
            page_size: None,
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Reactions by cast: every live reaction of that type on the target, across shards.
    let expected: BTreeSet<String> = dump
        .reactions
        .iter()
        .filter(|r| {
            r.live
                && r.reaction_type == reaction.reaction_type
                && r.target_cast_hash == reaction.target_cast_hash
        })
        .map(|r| r.hash.clone())
        .collect();
    let by_cast = client
        .get_reactions_by_cast(ReactionsByTargetRequest {
            target: Some(reactions_by_target_request::Target::TargetCastId(
                target.clone(),
            )),
            reaction_type: Some(reaction.reaction_type),
            page_size: None,
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner();
    let got: BTreeSet<String> = by_cast
        .messages
        .iter()
        .map(|m| hex::encode(&m.hash))
        .collect();
    assert_eq!(got, expected);
    let tokens: Vec<Option<Vec<u8>>> =
        serde_json::from_slice(&by_cast.next_page_token.unwrap()).unwrap();
    assert_eq!(
        tokens,
        vec![None, None],
        "a JSON array with one null per shard"
    );
    let error = client
        .get_reactions_by_cast(ReactionsByTargetRequest {
            target: Some(reactions_by_target_request::Target::TargetCastId(target)),
            reaction_type: None,
            page_size: None,
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    // Casts by parent URL, paged two at a time through the per-shard tokens.
    let url_row = dump
        .casts
        .iter()
        .find(|r| r.live && r.parent_url.is_some())
        .unwrap();
    let url = url_row.parent_url.clone().unwrap();
    let expected: BTreeSet<String> = dump
        .casts
        .iter()
        .filter(|r| r.live && r.parent_url.as_ref() == Some(&url))
        .map(|r| r.hash.clone())
        .collect();
    let mut got = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .get_casts_by_parent(CastsByParentRequest {
                parent: Some(casts_by_parent_request::Parent::ParentUrl(url.clone())),
                page_size: Some(2),
                page_token: token.clone(),
                reverse: None,
            })
            .await
            .unwrap()
            .into_inner();
        got.extend(page.messages.iter().map(|m| hex::encode(&m.hash)));
        let next = page.next_page_token.unwrap();
        let tokens: Vec<Option<Vec<u8>>> = serde_json::from_slice(&next).unwrap();
        if tokens.iter().all(Option::is_none) {
            break;
        }
        // Once a shard is done the node would start it over; a client stops asking for it
        // only by stopping altogether, so page until both are done at the same time.
        if tokens.iter().any(Option::is_none) {
            break;
        }
        token = Some(next);
    }
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert!(got_set.is_subset(&expected));
    assert!(!got_set.is_empty());

    // Links by target need a type.
    let error = client
        .get_links_by_target(LinksByTargetRequest {
            target: Some(waypoint_proto::links_by_target_request::Target::TargetFid(
                1,
            )),
            link_type: None,
            page_size: None,
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let followers = client
        .get_links_by_target(LinksByTargetRequest {
            target: Some(waypoint_proto::links_by_target_request::Target::TargetFid(
                link.target_fid,
            )),
            link_type: Some("follow".into()),
            page_size: None,
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner();
    let expected: BTreeSet<String> = dump
        .links
        .iter()
        .filter(|r| r.live && r.target_fid == link.target_fid)
        .map(|r| r.hash.clone())
        .collect();
    let got: BTreeSet<String> = followers
        .messages
        .iter()
        .map(|m| hex::encode(&m.hash))
        .collect();
    assert_eq!(got, expected);
    hub.shutdown().await;
}

fn fid_request(fid: u64, page_size: Option<u32>, page_token: Option<Vec<u8>>) -> FidRequest {
    FidRequest {
        fid,
        page_size,
        page_token,
        reverse: None,
    }
}

fn hashes(messages: &[Message]) -> BTreeSet<String> {
    messages.iter().map(|m| hex::encode(&m.hash)).collect()
}

/// Pages a cross-shard query until every shard is done at the same time; with page sizes
/// larger than any shard's rows that is one call.
fn cross_shard_done(token: &Option<Vec<u8>>) -> bool {
    let tokens: Vec<Option<Vec<u8>>> =
        serde_json::from_slice(token.as_ref().expect("always a token")).expect("json token");
    tokens.iter().all(Option::is_none)
}

#[tokio::test]
async fn by_fid_and_by_target_queries_return_current_adds() {
    let (hub, mut client) = start(small_options()).await;
    let dump = hub.dump_state();
    for fid in 1..=40u64 {
        // Adds only, paged one at a time.
        let mut casts = Vec::new();
        let mut token = None;
        loop {
            let page = client
                .get_casts_by_fid(fid_request(fid, Some(1), token.clone()))
                .await
                .unwrap()
                .into_inner();
            casts.extend(page.messages);
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let expected: BTreeSet<String> = dump
            .casts
            .iter()
            .filter(|r| r.fid == fid && r.live)
            .map(|r| r.hash.clone())
            .collect();
        assert_eq!(hashes(&casts), expected);
        assert_eq!(casts.len(), expected.len());

        let reactions = client
            .get_reactions_by_fid(waypoint_proto::ReactionsByFidRequest {
                fid,
                reaction_type: Some(2),
                page_size: None,
                page_token: None,
                reverse: None,
            })
            .await
            .unwrap()
            .into_inner();
        let expected: BTreeSet<String> = dump
            .reactions
            .iter()
            .filter(|r| r.fid == fid && r.live && r.reaction_type == 2)
            .map(|r| r.hash.clone())
            .collect();
        assert_eq!(hashes(&reactions.messages), expected);

        let links = client
            .get_links_by_fid(waypoint_proto::LinksByFidRequest {
                fid,
                link_type: None,
                page_size: None,
                page_token: None,
                reverse: None,
            })
            .await
            .unwrap()
            .into_inner();
        let expected: BTreeSet<String> = dump
            .links
            .iter()
            .filter(|r| r.fid == fid && r.live)
            .map(|r| r.hash.clone())
            .collect();
        assert_eq!(hashes(&links.messages), expected);

        let user_data = client
            .get_user_data_by_fid(fid_request(fid, None, None))
            .await
            .unwrap()
            .into_inner();
        let expected: BTreeSet<String> = dump
            .user_data
            .iter()
            .filter(|r| r.fid == fid && r.live)
            .map(|r| r.hash.clone())
            .collect();
        assert_eq!(hashes(&user_data.messages), expected);

        let verifications = client
            .get_verifications_by_fid(fid_request(fid, None, None))
            .await
            .unwrap()
            .into_inner();
        let expected: BTreeSet<String> = dump
            .verifications
            .iter()
            .filter(|r| r.fid == fid && r.live)
            .map(|r| r.hash.clone())
            .collect();
        assert_eq!(hashes(&verifications.messages), expected);

        // Mentions, across shards.
        let mentions = client
            .get_casts_by_mention(fid_request(fid, Some(10_000), None))
            .await
            .unwrap()
            .into_inner();
        assert!(cross_shard_done(&mentions.next_page_token));
        let expected: BTreeSet<String> = dump
            .casts
            .iter()
            .filter(|r| r.live && r.mentions.contains(&fid))
            .map(|r| r.hash.clone())
            .collect();
        assert_eq!(hashes(&mentions.messages), expected);

        let lend = client
            .get_all_lend_storage_messages_by_fid(FidTimestampRequest {
                fid,
                page_size: None,
                page_token: None,
                reverse: None,
                start_timestamp: None,
                stop_timestamp: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(lend.messages.is_empty() && lend.next_page_token.is_none());
    }

    // Replies to a cast, across shards.
    let reply = dump
        .casts
        .iter()
        .find(|r| r.live && r.parent_hash.is_some())
        .unwrap();
    let parent = CastId {
        fid: reply.parent_fid.unwrap(),
        hash: hex::decode(reply.parent_hash.as_ref().unwrap()).unwrap(),
    };
    let replies = client
        .get_casts_by_parent(CastsByParentRequest {
            parent: Some(casts_by_parent_request::Parent::ParentCastId(parent)),
            page_size: Some(10_000),
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cross_shard_done(&replies.next_page_token));
    let expected: BTreeSet<String> = dump
        .casts
        .iter()
        .filter(|r| r.live && r.parent_hash == reply.parent_hash)
        .map(|r| r.hash.clone())
        .collect();
    assert_eq!(hashes(&replies.messages), expected);

    // Reactions on a URL.
    let on_url = dump
        .reactions
        .iter()
        .find(|r| r.live && r.target_url.is_some())
        .unwrap();
    let url = on_url.target_url.clone().unwrap();
    let by_target = client
        .get_reactions_by_target(ReactionsByTargetRequest {
            target: Some(reactions_by_target_request::Target::TargetUrl(url.clone())),
            reaction_type: None,
            page_size: Some(10_000),
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner();
    let expected: BTreeSet<String> = dump
        .reactions
        .iter()
        .filter(|r| r.live && r.target_url.as_ref() == Some(&url))
        .map(|r| r.hash.clone())
        .collect();
    assert_eq!(hashes(&by_target.messages), expected);
    hub.shutdown().await;
}

/// Events of the last committed block of a shard.
async fn last_block(client: &mut Client, hub: &DevHubHandle, shard: u32) -> Vec<HubEvent> {
    let block = ids::event_block(hub.last_event_id(shard));
    all_events(client, shard, ids::block_start_id(block), 1000).await
}

/// Events of the last block of every shard.
async fn last_blocks(client: &mut Client, hub: &DevHubHandle) -> Vec<HubEvent> {
    let mut events = Vec::new();
    for shard in 1..=hub.num_shards() {
        let block = last_block(client, hub, shard).await;
        check_blocks(&block, shard);
        events.extend(block);
    }
    events
}

#[tokio::test]
async fn broken_messages_reach_the_wire_and_leave_the_store_alone() {
    let (hub, mut client) = start(small_options()).await;
    let before = hub.dump_state();
    for (faults, expected) in [
        (
            Faults {
                bad_hash_rate: 1.0,
                ..Faults::default()
            },
            "hash mismatch",
        ),
        (
            Faults {
                bad_signature_rate: 1.0,
                ..Faults::default()
            },
            "bad signature",
        ),
        (
            Faults {
                undecodable_rate: 1.0,
                ..Faults::default()
            },
            "undecodable",
        ),
    ] {
        hub.set_faults(faults);
        hub.append_live(6);
        let events = last_blocks(&mut client, &hub).await;
        let messages: Vec<&Message> = events
            .iter()
            .filter_map(merge_message)
            .filter_map(|body| body.message.as_ref())
            .collect();
        assert!(!messages.is_empty());
        for message in messages {
            if expected == "undecodable" {
                verify(message).expect("hash and signature match the garbage");
                assert!(message.data.is_none());
                assert!(MessageData::decode(message.data_bytes.as_deref().unwrap()).is_err());
            } else {
                assert_eq!(verify(message).unwrap_err(), expected);
            }
        }
    }
    assert_eq!(hub.dump_state(), before, "broken messages are never merged");
    hub.shutdown().await;
}

#[tokio::test]
async fn prunes_revokes_failures_and_compact_states_follow_the_store() {
    let (hub, mut client) = start(small_options()).await;

    hub.set_faults(Faults {
        prune_rate: 1.0,
        ..Faults::default()
    });
    hub.append_live(3);
    let events = last_blocks(&mut client, &hub).await;
    let pruned: Vec<&Message> = events
        .iter()
        .filter_map(|e| match e.body.as_ref() {
            Some(hub_event::Body::PruneMessageBody(body)) => body.message.as_ref(),
            _ => None,
        })
        .collect();
    assert_eq!(pruned.len(), 3);

    hub.set_faults(Faults {
        revoke_rate: 1.0,
        ..Faults::default()
    });
    hub.append_live(3);
    let events = last_blocks(&mut client, &hub).await;
    let revoked: Vec<&Message> = events
        .iter()
        .filter_map(|e| match e.body.as_ref() {
            Some(hub_event::Body::RevokeMessageBody(body)) => body.message.as_ref(),
            _ => None,
        })
        .collect();
    assert_eq!(revoked.len(), 3);
    let dump = hub.dump_state();
    for message in pruned.iter().chain(revoked.iter()) {
        let fid = data(message).fid;
        let hash = hex::encode(&message.hash);
        for set in ["casts", "reactions", "links", "verifications", "user_data"] {
            let all = get_all(&mut client, fid, set, None).await;
            assert!(
                all.iter().all(|m| m.hash != message.hash),
                "gone from the store"
            );
        }
        let live_row = dump
            .casts
            .iter()
            .map(|r| (&r.hash, r.live))
            .chain(dump.reactions.iter().map(|r| (&r.hash, r.live)))
            .chain(dump.links.iter().map(|r| (&r.hash, r.live)))
            .chain(dump.verifications.iter().map(|r| (&r.hash, r.live)))
            .chain(dump.user_data.iter().map(|r| (&r.hash, r.live)))
            .find(|(row_hash, _)| **row_hash == hash);
        if let Some((_, live)) = live_row {
            assert!(!live, "a pruned or revoked add is not live");
        }
    }

    hub.set_faults(Faults {
        merge_failure_rate: 1.0,
        ..Faults::default()
    });
    let before = hub.dump_state();
    hub.append_live(2);
    let events = last_blocks(&mut client, &hub).await;
    let failures: Vec<_> = events
        .iter()
        .filter_map(|e| match e.body.as_ref() {
            Some(hub_event::Body::MergeFailure(body)) => Some(body),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2);
    assert!(
        failures
            .iter()
            .all(|f| !f.code.is_empty() && f.message.is_some())
    );
    assert_eq!(hub.dump_state(), before, "a merge failure changes nothing");

    hub.set_faults(Faults {
        compact_state_rate: 1.0,
        ..Faults::default()
    });
    hub.append_live(1);
    let events = last_blocks(&mut client, &hub).await;
    let compact = events
        .iter()
        .filter_map(merge_message)
        .find(|body| {
            body.message
                .as_ref()
                .is_some_and(|m| data(m).r#type == MessageType::LinkCompactState as i32)
        })
        .expect("a compact state event");
    assert!(
        compact.deleted_messages.is_empty(),
        "stripped for compact state"
    );
    let message = compact.message.as_ref().unwrap();
    verify(message).unwrap();
    let fid = data(message).fid;
    let Some(message_data::Body::LinkCompactStateBody(body)) = data(message).body.as_ref() else {
        panic!("compact state body");
    };
    let stored = client
        .get_link_compact_state_message_by_fid(FidRequest {
            fid,
            page_size: None,
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.messages, vec![message.clone()]);
    let links = get_all(&mut client, fid, "links", None).await;
    for link in &links {
        if let Some(message_data::Body::LinkBody(link_body)) = data(link).body.as_ref()
            && link_body.r#type == "follow"
        {
            let Some(waypoint_proto::link_body::Target::TargetFid(target)) = link_body.target
            else {
                panic!("link target");
            };
            assert!(body.target_fids.contains(&target));
            assert_eq!(
                data(link).r#type,
                MessageType::LinkAdd as i32,
                "removes compacted"
            );
        }
    }
    let dump = hub.dump_state();
    assert!(
        dump.links
            .iter()
            .filter(|r| r.fid == fid && r.live)
            .all(|r| body.target_fids.contains(&r.target_fid))
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn stream_faults_cut_drop_and_duplicate() {
    let (hub, mut client) = start(small_options()).await;

    // Cut after N events, with an UNAVAILABLE status.
    hub.set_faults(Faults {
        cut_subscribe_after: Some(5),
        ..Faults::default()
    });
    let mut stream = client
        .subscribe(subscribe_request(Some(1), Some(0)))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..5 {
        next_event(&mut stream).await.unwrap().unwrap();
    }
    let error = next_event(&mut stream).await.unwrap().unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    // A clean cut just ends the stream.
    hub.set_faults(Faults {
        cut_subscribe_after: Some(3),
        cut_cleanly: true,
        ..Faults::default()
    });
    let mut stream = client
        .subscribe(subscribe_request(Some(1), Some(0)))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        next_event(&mut stream).await.unwrap().unwrap();
    }
    assert!(next_event(&mut stream).await.is_none());

    // Dropped live events: BLOCK_CONFIRMED still arrives and still counts them.
    hub.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let mut stream = client
        .subscribe(subscribe_request(Some(1), None))
        .await
        .unwrap()
        .into_inner();
    hub.append_live(30);
    let confirmed = next_event(&mut stream).await.unwrap().unwrap();
    let Some(hub_event::Body::BlockConfirmedBody(body)) = confirmed.body else {
        panic!("expected BLOCK_CONFIRMED");
    };
    assert!(body.total_events > 1, "the block had events");
    hub.append_live(0);
    let next = next_event(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        next.r#type,
        HubEventType::BlockConfirmed as i32,
        "the events were skipped"
    );
    assert_eq!(ids::event_block(next.id), body.block_number + 1);

    // Duplicates: every event twice in a row.
    hub.set_faults(Faults {
        duplicate_rate: 1.0,
        ..Faults::default()
    });
    let mut stream = client
        .subscribe(subscribe_request(Some(2), Some(hub.last_event_id(2))))
        .await
        .unwrap()
        .into_inner();
    let first = next_event(&mut stream).await.unwrap().unwrap();
    let second = next_event(&mut stream).await.unwrap().unwrap();
    assert_eq!(first, second);
    hub.shutdown().await;
}

#[tokio::test]
async fn retention_drops_old_events_silently() {
    let (hub, mut client) = start(small_options()).await;
    let newest_block = ids::event_block(hub.last_event_id(1));
    hub.set_faults(Faults {
        event_retention_blocks: Some(3),
        ..Faults::default()
    });
    let oldest = ids::block_start_id(newest_block - 2);
    assert_eq!(hub.oldest_event_id(1), Some(oldest));
    let first = client
        .get_events(EventsRequest {
            start_id: 0,
            shard_index: Some(1),
            stop_id: None,
            page_size: Some(1),
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.events[0].id, oldest);
    let mut stream = client
        .subscribe(subscribe_request(Some(1), Some(0)))
        .await
        .unwrap()
        .into_inner();
    let replayed = next_event(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        replayed.id, oldest,
        "replay starts at the oldest retained event"
    );
    hub.append_live(1);
    assert_eq!(
        hub.oldest_event_id(1),
        Some(ids::block_start_id(newest_block - 1)),
        "the window moves with new blocks"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn dump_state_is_deterministic_and_has_removed_rows() {
    let a = DevHub::build(small_options()).unwrap().dump_state();
    let b = DevHub::build(small_options()).unwrap().dump_state();
    assert_eq!(a, b);
    assert!(a.diff(&b, 5).is_empty());
    let other = DevHub::build(DevHubOptions {
        seed: 8,
        ..small_options()
    })
    .unwrap()
    .dump_state();
    assert_ne!(a, other);
    assert!(a.casts.iter().any(|r| !r.live));
    assert!(a.reactions.iter().any(|r| !r.live));
    assert!(a.links.iter().any(|r| !r.live));
    assert!(a.onchain_events.len() >= 3 * 40);
    assert!(a.username_proofs.len() >= 40);
    let json = serde_json::to_string(&a).unwrap();
    let back: ReplicaState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
    // Sorted by key.
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, a);
}

#[tokio::test]
async fn live_appends_are_deterministic_for_a_seed() {
    let run = || async {
        let (hub, mut client) = start(DevHubOptions {
            faults: Faults {
                prune_rate: 0.05,
                compact_state_rate: 0.05,
                ..Faults::default()
            },
            ..small_options()
        })
        .await;
        hub.append_live(40);
        hub.append_live(0);
        hub.append_live(40);
        let mut hashes = Vec::new();
        for shard in 1..=2 {
            let block = last_block(&mut client, &hub, shard).await;
            let start = ids::event_block(hub.last_event_id(shard)) - 2;
            let events = all_events(&mut client, shard, ids::block_start_id(start), 1000).await;
            assert!(events.len() >= block.len());
            hashes.extend(events.iter().map(|event| {
                (
                    event.id,
                    event.r#type,
                    merge_message(event)
                        .and_then(|b| b.message.clone())
                        .map(|m| m.hash),
                )
            }));
        }
        let dump = hub.dump_state();
        hub.shutdown().await;
        (hashes, dump)
    };
    let (first_events, first_dump) = run().await;
    let (second_events, second_dump) = run().await;
    assert_eq!(first_events, second_events);
    assert_eq!(first_dump, second_dump);
}

#[tokio::test]
async fn request_headers_are_recorded() {
    let (hub, mut client) = start(small_options()).await;
    let mut request = Request::new(GetInfoRequest {});
    request
        .metadata_mut()
        .insert("x-api-key", "secret-key".parse().unwrap());
    client.get_info(request).await.unwrap();
    assert!(
        hub.received_headers()
            .contains(&("x-api-key".to_string(), "secret-key".to_string()))
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_streams_and_frees_the_port() {
    let (hub, mut client) = start(small_options()).await;
    let addr = hub.addr();
    let mut stream = client
        .subscribe(subscribe_request(Some(1), None))
        .await
        .unwrap()
        .into_inner();
    let last = hub.last_event_id(1);
    hub.shutdown().await;
    match next_event(&mut stream).await {
        None => {}
        Some(Err(_)) => {}
        Some(Ok(event)) => panic!("unexpected event {}", event.id),
    }
    // A new hub with the same seed on the same port: same history.
    let hub = DevHub::build(small_options())
        .unwrap()
        .serve(addr)
        .await
        .expect("the port is free again");
    assert_eq!(hub.last_event_id(1), last);
    let mut client = connect(&hub.url()).await;
    client.get_info(GetInfoRequest {}).await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn live_timer_commits_blocks() {
    let (hub, mut client) = start(DevHubOptions {
        block_time: Some(Duration::from_millis(50)),
        live_rate: 200.0,
        live_wall_clock: true,
        ..small_options()
    })
    .await;
    let start_id = hub.last_event_id(1);
    let mut stream = client
        .subscribe(subscribe_request(Some(1), None))
        .await
        .unwrap()
        .into_inner();
    let mut blocks = 0;
    let mut messages = 0;
    while blocks < 5 {
        let event = next_event(&mut stream).await.unwrap().unwrap();
        if event.r#type == HubEventType::BlockConfirmed as i32 {
            blocks += 1;
        } else {
            messages += 1;
        }
        if let Some(body) = merge_message(&event) {
            let timestamp = u64::from(data(body.message.as_ref().unwrap()).timestamp);
            assert!(
                timestamp + 60 >= ids::farcaster_now(),
                "live messages are current"
            );
        }
    }
    assert!(hub.last_event_id(1) > start_id);
    assert!(messages > 0);
    hub.shutdown().await;
}

#[test]
fn build_of_1000_fids() {
    let started = Instant::now();
    let hub = DevHub::build(DevHubOptions {
        num_fids: 1000,
        messages_per_fid: 100,
        ..DevHubOptions::default()
    })
    .unwrap();
    let stats = hub.stats().clone();
    println!(
        "built 1000 fids x 100 in {:?}: {} messages ({} stored), {} on-chain events, {} events in {} blocks",
        started.elapsed(),
        stats.num_messages,
        stats.num_stored_messages,
        stats.num_onchain_events,
        stats.num_events,
        stats.num_blocks
    );
    assert!(stats.num_messages > 50_000);
}

#[tokio::test]
async fn run_serves_and_writes_the_dump_on_start_and_exit() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.json");
    let args = waypoint::devhub::DevHubArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        fids: 20,
        seed: 3,
        shards: 2,
        messages_per_fid: 10,
        live_rate: 0.0,
        block_time_ms: 20,
        heavy_fid: Vec::new(),
        dump_state: Some(path.clone()),
        cut_subscribe_after: None,
        cut_cleanly: false,
        drop_rate: 0.0,
        stall_live: false,
        duplicate_rate: 0.0,
        bad_hash_rate: 0.0,
        bad_signature_rate: 0.0,
        undecodable_rate: 0.0,
        prune_rate: 0.0,
        revoke_rate: 0.0,
        merge_failure_rate: 0.0,
        compact_state_rate: 0.0,
        event_retention_blocks: None,
        unavailable_fids: Vec::new(),
        not_found_fids: Vec::new(),
        rate_limit: None,
    };
    let expected = DevHub::build(args.options()).unwrap().dump_state();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(waypoint::devhub::run(args, async {
        let _ = stop_rx.await;
    }));
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no dump written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first: ReplicaState = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(first, expected);
    std::fs::remove_file(&path).unwrap();
    stop_tx.send(()).unwrap();
    running.await.unwrap().unwrap();
    let last: ReplicaState = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(last, expected, "empty live blocks change nothing");
}
