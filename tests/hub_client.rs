//! Waypoint's hub client against the dev hub on an ephemeral port: every wrapped RPC, paging,
//! Subscribe replay and live blocks, verification, metadata, and what happens when the hub
//! cuts streams, restarts, answers with errors or does not speak gRPC at all.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::harness::{devhub, devhub_again, small_hub};
use futures::StreamExt;
use tonic::Code;
use waypoint::devhub::{DevHubHandle, Faults};
use waypoint::hub::verify::{message_data, verify};
use waypoint::hub::{Client, ClientOptions, FidMessages, HubError, RetryPolicy, decode_event};
use waypoint_proto::{
    CastId, CastsByParentRequest, HubEvent, HubEventType, LinkRequest, LinksByFidRequest,
    LinksByTargetRequest, Message, ReactionRequest, ReactionsByFidRequest,
    ReactionsByTargetRequest, UserDataRequest, VerificationRequest, casts_by_parent_request,
    hub_event, link_request, links_by_target_request, reaction_request,
    reactions_by_target_request,
};

/// What the subscriber asks for: every type Waypoint applies, plus BLOCK_CONFIRMED.
const ALL_EVENT_TYPES: [HubEventType; 6] = waypoint::pipeline::route::SUBSCRIBED;

fn options(uri: &str) -> ClientOptions {
    ClientOptions {
        uri: uri.to_owned(),
        tls: false,
        headers: Vec::new(),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        max_message_size: 64 << 20,
        retry: RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            max_attempts: 4,
        },
        max_concurrent_requests: 64,
        max_requests_per_second: None,
    }
}

fn client(hub: &DevHubHandle) -> Client {
    Client::new(options(&hub.url())).expect("client options")
}

fn hex_hashes(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| hex::encode(&m.hash)).collect()
}

fn unique(hashes: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = hashes.iter().cloned().collect();
    assert_eq!(set.len(), hashes.len(), "no message twice");
    set
}

#[tokio::test]
async fn every_wrapped_rpc_round_trips() {
    let hub = devhub(small_hub(3)).await;
    let client = client(&hub);
    let dump = hub.dump_state();

    let info = client.info().await.unwrap();
    assert_eq!(info.num_shards, 2);
    assert_eq!(client.data_shards().await.unwrap(), vec![1, 2]);

    // GetFids, every page of every shard: each fid once, on one shard.
    let mut fids = Vec::new();
    for shard in [1, 2] {
        let mut pages = client.fids_pages(shard, 7);
        while let Some(page) = pages.next().await {
            fids.extend(page.unwrap());
        }
    }
    let set: BTreeSet<u64> = fids.iter().copied().collect();
    assert_eq!(set.len(), fids.len());
    assert_eq!(set, (1..=40).collect());

    let cast = dump.casts.iter().find(|r| r.live).unwrap();
    let got = client
        .get_cast(cast.fid, hex::decode(&cast.hash).unwrap())
        .await
        .unwrap();
    assert_eq!(hex::encode(&got.hash), cast.hash);

    let child = dump
        .casts
        .iter()
        .find(|r| r.live && r.parent_url.is_some())
        .unwrap();
    let by_parent = client
        .casts_by_parent(CastsByParentRequest {
            parent: Some(casts_by_parent_request::Parent::ParentUrl(
                child.parent_url.clone().unwrap(),
            )),
            page_size: Some(1000),
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap();
    assert!(hex_hashes(&by_parent.messages).contains(&child.hash));

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
        .unwrap();
    assert_eq!(hex::encode(&got.hash), reaction.hash);
    let by_fid = client
        .reactions_by_fid(ReactionsByFidRequest {
            fid: reaction.fid,
            reaction_type: None,
            page_size: Some(1000),
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap();
    assert!(hex_hashes(&by_fid.messages).contains(&reaction.hash));
    let target_request = ReactionsByTargetRequest {
        target: Some(reactions_by_target_request::Target::TargetCastId(target)),
        reaction_type: Some(reaction.reaction_type),
        page_size: Some(1000),
        page_token: None,
        reverse: None,
    };
    let by_cast = client
        .reactions_by_cast(target_request.clone())
        .await
        .unwrap();
    assert!(hex_hashes(&by_cast.messages).contains(&reaction.hash));
    let by_target = client.reactions_by_target(target_request).await.unwrap();
    assert_eq!(
        unique(&hex_hashes(&by_target.messages)),
        unique(&hex_hashes(&by_cast.messages))
    );

    let link = dump.links.iter().find(|r| r.live).unwrap();
    let got = client
        .get_link(LinkRequest {
            fid: link.fid,
            link_type: link.link_type.clone(),
            target: Some(link_request::Target::TargetFid(link.target_fid)),
        })
        .await
        .unwrap();
    assert_eq!(hex::encode(&got.hash), link.hash);
    let by_fid = client
        .links_by_fid(LinksByFidRequest {
            fid: link.fid,
            link_type: None,
            page_size: Some(1000),
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap();
    assert!(hex_hashes(&by_fid.messages).contains(&link.hash));
    let followers = client
        .links_by_target(LinksByTargetRequest {
            target: Some(links_by_target_request::Target::TargetFid(link.target_fid)),
            link_type: Some(link.link_type.clone()),
            page_size: Some(1000),
            page_token: None,
            reverse: None,
        })
        .await
        .unwrap();
    assert!(hex_hashes(&followers.messages).contains(&link.hash));

    let user_data = dump.user_data.iter().find(|r| r.live).unwrap();
    let got = client
        .get_user_data(UserDataRequest {
            fid: user_data.fid,
            user_data_type: user_data.user_data_type,
        })
        .await
        .unwrap();
    assert_eq!(hex::encode(&got.hash), user_data.hash);

    let verification = dump.verifications.iter().find(|r| r.live).unwrap();
    let got = client
        .get_verification(VerificationRequest {
            fid: verification.fid,
            address: hex::decode(&verification.address).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(hex::encode(&got.hash), verification.hash);

    // On-chain events: ID_REGISTER (type 3) of the fid, also via the id-registry lookup.
    let registered = client.onchain_events(7, 3).await.unwrap();
    assert_eq!(registered.events.len(), 1);
    assert_eq!(registered.events[0].fid, 7);
    assert_eq!(client.id_registry_event(7).await.unwrap().fid, 7);

    let proof_row = dump.username_proofs.iter().find(|r| r.live).unwrap();
    let proof = client
        .username_proof(proof_row.name.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(proof.fid, proof_row.fid);
    // Mirrored to both shards by the node; the client lists each name once.
    let proofs = client.username_proofs(proof_row.fid).await.unwrap();
    assert_eq!(
        proofs
            .iter()
            .filter(|p| p.name == proof_row.name.as_bytes())
            .count(),
        1
    );

    // GetEvent and GetEvents agree on the last event of shard 1.
    let last = hub.last_event_id(1);
    let event = client.get_event(1, last).await.unwrap();
    assert_eq!(event.id, last);
    let oldest = client.oldest_event_id(1).await.unwrap().unwrap();
    let events = client.events(1, oldest, None, 50).await.unwrap();
    assert_eq!(events.last().unwrap().id, last);

    // Every per-fid list answers.
    for list in [
        FidMessages::AllCasts,
        FidMessages::AllReactions,
        FidMessages::AllLinks,
        FidMessages::AllVerifications,
        FidMessages::AllUserData,
        FidMessages::AllLendStorage,
        FidMessages::Casts,
        FidMessages::CastsByMention,
        FidMessages::UserData,
        FidMessages::Verifications,
        FidMessages::LinkCompactState,
    ] {
        client.fid_messages(list, 5, 10).await.unwrap();
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn paging_returns_every_message_exactly_once() {
    let hub = devhub(small_hub(4)).await;
    let client = client(&hub);
    let dump = hub.dump_state();
    for fid in [1u64, 2, 17] {
        // The current casts (adds that are live, and the removes) are what GetAll* serves.
        let everything = client
            .fid_messages(FidMessages::AllCasts, fid, 10_000)
            .await
            .unwrap();
        let expected = unique(&hex_hashes(&everything));
        let live: BTreeSet<String> = dump
            .casts
            .iter()
            .filter(|r| r.fid == fid && r.live)
            .map(|r| r.hash.clone())
            .collect();
        assert!(live.is_subset(&expected), "fid {fid}");
        let count = everything.len() as u32;
        assert!(count > 3, "fid {fid} has a few casts");
        // A page size of 1, one that leaves a partial last page, and one that makes the last
        // page exactly full (the node may then answer one more, empty page).
        for page_size in [1, 3, count, count / 2] {
            let mut pages = client.fid_message_pages(FidMessages::AllCasts, fid, page_size);
            let mut got = Vec::new();
            let mut num_pages = 0;
            while let Some(page) = pages.next().await {
                let page = page.unwrap();
                assert!(page.len() as u32 <= page_size);
                got.extend(hex_hashes(&page));
                num_pages += 1;
            }
            assert_eq!(unique(&got), expected, "fid {fid}, page size {page_size}");
            assert!(num_pages <= count.div_ceil(page_size) + 1);
        }
    }

    // GetEvents pages over a whole shard: each event once, in order.
    let oldest = client.oldest_event_id(2).await.unwrap().unwrap();
    for page_size in [7, 100] {
        let events = client.events(2, oldest, None, page_size).await.unwrap();
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ascending");
        assert_eq!(*ids.last().unwrap(), hub.last_event_id(2));
    }
    hub.shutdown().await;
}

/// Reads events until `done` says so or the stream ends.
async fn read_until<S>(stream: &mut S, mut done: impl FnMut(&HubEvent) -> bool) -> Vec<HubEvent>
where
    S: futures::Stream<Item = Result<HubEvent, HubError>> + Unpin,
{
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s");
        match next {
            Some(Ok(event)) => {
                let stop = done(&event);
                events.push(event);
                if stop {
                    return events;
                }
            }
            Some(Err(error)) => panic!("stream failed: {error}"),
            None => return events,
        }
    }
}

#[tokio::test]
async fn subscribe_replays_from_an_id_then_delivers_live_blocks_with_matching_counts() {
    let hub = devhub(small_hub(5)).await;
    let client = client(&hub);
    let last = hub.last_event_id(1);
    let history = client.events(1, 0, None, 1000).await.unwrap();
    let from = history[history.len() / 2].id;

    let mut stream = Box::pin(
        client
            .subscribe(1, Some(from), &ALL_EVENT_TYPES)
            .await
            .unwrap(),
    );
    let replayed = read_until(&mut stream, |event| event.id == last).await;
    assert_eq!(replayed.first().unwrap().id, from, "from_id is inclusive");
    let expected: Vec<u64> = history
        .iter()
        .filter(|e| e.id >= from)
        .map(|e| e.id)
        .collect();
    assert_eq!(replayed.iter().map(|e| e.id).collect::<Vec<_>>(), expected);

    hub.append_live(30);
    let new_last = hub.last_event_id(1);
    assert!(new_last > last);
    let live = read_until(&mut stream, |event| event.id == new_last).await;
    assert!(live.iter().all(|e| e.id > last));

    // Every block: BLOCK_CONFIRMED first (seq 0), its counts equal to the block's events.
    let mut blocks: BTreeMap<u64, Vec<&HubEvent>> = BTreeMap::new();
    for event in &live {
        blocks.entry(event.id >> 14).or_default().push(event);
    }
    assert!(!blocks.is_empty());
    for (block, events) in blocks {
        let Some(hub_event::Body::BlockConfirmedBody(confirmed)) = &events[0].body else {
            panic!("block {block} starts with BLOCK_CONFIRMED");
        };
        assert_eq!(events[0].id & 0x3fff, 0);
        assert_eq!(confirmed.block_number, block);
        // The count includes the BLOCK_CONFIRMED event itself.
        assert_eq!(confirmed.total_events as usize, events.len());
        let mut counts: BTreeMap<i32, u64> = BTreeMap::new();
        for event in &events {
            *counts.entry(event.r#type).or_default() += 1;
        }
        let confirmed_counts: BTreeMap<i32, u64> = confirmed
            .event_counts_by_type
            .iter()
            .map(|(kind, count)| (*kind, *count))
            .collect();
        assert_eq!(confirmed_counts, counts, "block {block}");
    }
    hub.shutdown().await;
}

fn merged_message(event: &HubEvent) -> Option<&Message> {
    match &event.body {
        Some(hub_event::Body::MergeMessageBody(body)) => body.message.as_ref(),
        _ => None,
    }
}

#[tokio::test]
async fn every_hub_message_verifies_and_each_corruption_has_its_reason() {
    let hub = devhub(small_hub(6)).await;
    let client = client(&hub);
    let mut checked = 0;
    for fid in 1..=40 {
        for list in [
            FidMessages::AllCasts,
            FidMessages::AllReactions,
            FidMessages::AllLinks,
            FidMessages::AllVerifications,
            FidMessages::AllUserData,
        ] {
            for message in client.fid_messages(list, fid, 100).await.unwrap() {
                verify(&message).unwrap_or_else(|error| panic!("fid {fid}: {error}"));
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "{checked} messages checked");

    let mut stream = Box::pin(client.subscribe(1, None, &ALL_EVENT_TYPES).await.unwrap());
    for (faults, expected) in [
        (
            Faults {
                bad_hash_rate: 1.0,
                ..Faults::default()
            },
            "bad_hash",
        ),
        (
            Faults {
                bad_signature_rate: 1.0,
                ..Faults::default()
            },
            "bad_signature",
        ),
        (
            Faults {
                undecodable_rate: 1.0,
                ..Faults::default()
            },
            "undecodable_data",
        ),
    ] {
        hub.set_faults(faults);
        hub.append_live(8);
        let last = hub.last_event_id(1);
        let events = read_until(&mut stream, |event| event.id == last).await;
        let reasons: BTreeSet<&'static str> = events
            .iter()
            .filter_map(merged_message)
            .map(|message| verify(message).and_then(|()| message_data(message).map(drop)))
            .map(|result| result.err().map_or("verified", |error| error.as_str()))
            .collect();
        assert_eq!(reasons, BTreeSet::from([expected]), "{expected}");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn configured_headers_arrive_on_unary_calls_and_subscribe() {
    let hub = devhub(small_hub(7)).await;
    let mut unary_options = options(&hub.url());
    unary_options.headers = vec![("X-Api-Key".into(), "unary-key".into())];
    Client::new(unary_options).unwrap().info().await.unwrap();
    assert!(
        hub.received_headers()
            .contains(&("x-api-key".into(), "unary-key".into()))
    );

    let mut stream_options = options(&hub.url());
    stream_options.headers = vec![("x-api-key".into(), "stream-key".into())];
    let stream_client = Client::new(stream_options).unwrap();
    let mut stream = Box::pin(
        stream_client
            .subscribe(2, Some(0), &ALL_EVENT_TYPES)
            .await
            .unwrap(),
    );
    read_until(&mut stream, |_| true).await;
    assert!(
        hub.received_headers()
            .contains(&("x-api-key".into(), "stream-key".into()))
    );

    // A header name that is not valid metadata is refused up front, naming the field.
    let mut bad = options(&hub.url());
    bad.headers = vec![("bad header".into(), "x".into())];
    let error = Client::new(bad).err().expect("invalid header name");
    assert!(error.to_string().starts_with("hub.headers:"), "{error}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_cut_stream_resumes_from_the_next_id_without_losing_or_repeating_events() {
    let mut hub_options = small_hub(8);
    hub_options.faults = Faults {
        cut_subscribe_after: Some(40),
        ..Faults::default()
    };
    let hub = devhub(hub_options).await;
    let client = client(&hub);
    let expected: Vec<u64> = client
        .events(1, 0, None, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let last = *expected.last().unwrap();

    let mut received = Vec::new();
    let mut cuts = 0;
    let mut from = Some(0);
    'resubscribe: loop {
        let mut stream = Box::pin(client.subscribe(1, from, &ALL_EVENT_TYPES).await.unwrap());
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an event or the cut within 10 s")
            {
                Some(Ok(event)) => {
                    received.push(event.id);
                    if event.id == last {
                        break 'resubscribe;
                    }
                    from = Some(event.id + 1);
                }
                // The cut: a typed error (or a clean end); carry on from the next id.
                Some(Err(error)) => {
                    assert!(error.is_retryable(), "a cut stream is transient: {error}");
                    cuts += 1;
                    continue 'resubscribe;
                }
                None => {
                    cuts += 1;
                    continue 'resubscribe;
                }
            }
        }
    }
    assert!(cuts >= 2, "the hub cut the stream ({cuts} times)");
    assert_eq!(received, expected);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_restarted_hub_is_picked_up_by_the_same_client() {
    let options = small_hub(9);
    let hub = devhub(options.clone()).await;
    let addr = hub.addr();
    let mut client_options = options_for_restart(&hub.url());
    client_options.retry.max_attempts = 2;
    let client = Client::new(client_options.clone()).unwrap();
    let before = client.info().await.unwrap();
    hub.shutdown().await;

    // While the hub is down, calls fail with a transient transport error once retries run out.
    let error = client.info().await.unwrap_err();
    assert!(
        matches!(error, HubError::Transport { .. }) && error.is_retryable(),
        "{error:?}"
    );

    // A call made while the hub is down succeeds once it is back on the same address.
    client_options.retry.max_attempts = 40;
    let patient = Client::new(client_options).unwrap();
    let waiting = tokio::spawn(async move { patient.info().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hub = devhub_again(options, addr).await;
    let after = waiting.await.unwrap().unwrap();
    assert_eq!(after.num_shards, before.num_shards);
    // And the first client, untouched, reconnects on its next call.
    assert_eq!(client.info().await.unwrap().num_shards, before.num_shards);
    hub.shutdown().await;
}

fn options_for_restart(uri: &str) -> ClientOptions {
    let mut options = options(uri);
    options.retry = RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        max_attempts: 2,
    };
    options
}

#[tokio::test]
async fn only_transient_failures_are_retried() {
    let hub = devhub(small_hub(10)).await;
    let mut slow_retries = options(&hub.url());
    slow_retries.retry = RetryPolicy {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(2),
        max_attempts: 5,
    };
    let client = Client::new(slow_retries).unwrap();

    // NOT_FOUND and INVALID_ARGUMENT come back at once: a retry would take 1 s or more.
    let started = Instant::now();
    let missing = client.get_cast(1, vec![0; 20]).await.unwrap_err();
    assert!(
        matches!(
            missing,
            HubError::Status {
                code: Code::NotFound,
                ..
            }
        ),
        "{missing:?}"
    );
    assert!(!missing.is_retryable());
    let invalid = client.get_event(9, 0).await.unwrap_err();
    assert!(
        matches!(invalid, HubError::Status { code, .. } if code == Code::InvalidArgument || code == Code::NotFound),
        "{invalid:?}"
    );
    let shard_zero = client
        .subscribe(0, Some(0), &ALL_EVENT_TYPES)
        .await
        .err()
        .expect("shard 0 cannot be subscribed");
    assert!(!shard_zero.is_retryable(), "{shard_zero:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "no retries");
    hub.shutdown().await;

    // An unreachable hub is retried, with growing delays, until the attempts run out.
    let mut unreachable = options(&hub_url_nobody_listens_on());
    unreachable.retry = RetryPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_millis(800),
        max_attempts: 3,
    };
    let started = Instant::now();
    let error = Client::new(unreachable).unwrap().info().await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    // Two waits: at least half of 200 ms and half of 400 ms with the jitter.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

fn hub_url_nobody_listens_on() -> String {
    format!("http://127.0.0.1:{}", common::harness::free_port())
}

#[tokio::test]
async fn garbage_oversized_and_silent_replies_are_typed_errors() {
    // Oversized: a page bigger than the receive limit.
    let hub = devhub(small_hub(11)).await;
    let mut small_limit = options(&hub.url());
    small_limit.max_message_size = 512;
    let error = Client::new(small_limit)
        .unwrap()
        .fid_messages(FidMessages::AllCasts, 1, 1000)
        .await
        .unwrap_err();
    assert!(matches!(error, HubError::TooLarge { .. }), "{error:?}");
    assert!(!error.is_retryable());
    hub.shutdown().await;

    // Garbage: a server that answers HTTP/2 prefaces with junk and hangs up.
    let junk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let junk_url = format!("http://{}", junk.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = junk.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = socket
                .write_all(b"\x00\xffthis is not http/2\r\n\r\n")
                .await;
            let _ = socket.shutdown().await;
        }
    });
    let error = Client::new(options(&junk_url))
        .unwrap()
        .info()
        .await
        .unwrap_err();
    assert!(matches!(error, HubError::Transport { .. }), "{error:?}");

    // Silent: a server that accepts and never answers hits the deadline, not a hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let mut quick = options(&silent_url);
    quick.request_timeout = Duration::from_millis(500);
    quick.connect_timeout = Duration::from_millis(500);
    quick.retry.max_attempts = 1;
    let started = Instant::now();
    let error = Client::new(quick).unwrap().info().await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();

    // Undecodable event bytes are a typed decode error.
    let error = decode_event(&[0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(error, HubError::Decode { .. }), "{error:?}");
}
