//! The apply rules against a real PostgreSQL: every CRDT rule, hostile content, and order
//! independence (shuffled, duplicated, re-batched histories converge to one state).

mod common;

use common::TestDb;
use ed25519_dalek::SigningKey;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use waypoint::hub::ids::FARCASTER_EPOCH_UNIX_SECONDS;
use waypoint::hub::verify::sign_message;
use waypoint::replica::ReplicaState;
use waypoint::store::apply::{ApplyOptions, EventInput, apply_events};
use waypoint::store::state::read_replica;
use waypoint::store::{Pg, migrate};
use waypoint_proto::{
    CastAddBody, CastId, CastRemoveBody, HubEvent, HubEventType, LinkBody, LinkCompactStateBody,
    MergeMessageBody, MergeUserNameProofBody, Message, MessageData, MessageType, OnChainEvent,
    PruneMessageBody, ReactionBody, RevokeMessageBody, UserDataBody, UserNameProof,
    VerificationAddAddressBody, VerificationRemoveBody, hub_event, link_body, message_data,
    reaction_body,
};

fn key(fid: u64) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&fid.to_le_bytes());
    SigningKey::from_bytes(&seed)
}

fn message(fid: u64, timestamp: u32, kind: MessageType, body: message_data::Body) -> Message {
    let data = MessageData {
        r#type: kind as i32,
        fid,
        timestamp,
        network: 1,
        body: Some(body),
    };
    sign_message(data, &key(fid))
}

fn merge(message: &Message) -> HubEvent {
    HubEvent {
        r#type: HubEventType::MergeMessage as i32,
        id: 1,
        body: Some(hub_event::Body::MergeMessageBody(MergeMessageBody {
            message: Some(message.clone()),
            deleted_messages: Vec::new(),
        })),
        block_number: 1,
        shard_index: 1,
        timestamp: 100,
    }
}

fn prune(message: &Message) -> HubEvent {
    HubEvent {
        r#type: HubEventType::PruneMessage as i32,
        body: Some(hub_event::Body::PruneMessageBody(PruneMessageBody {
            message: Some(message.clone()),
        })),
        ..merge(message)
    }
}

fn revoke(message: &Message) -> HubEvent {
    HubEvent {
        r#type: HubEventType::RevokeMessage as i32,
        body: Some(hub_event::Body::RevokeMessageBody(RevokeMessageBody {
            message: Some(message.clone()),
        })),
        ..merge(message)
    }
}

fn cast(fid: u64, ts: u32, text: &str) -> Message {
    message(
        fid,
        ts,
        MessageType::CastAdd,
        message_data::Body::CastAddBody(CastAddBody {
            text: text.into(),
            ..Default::default()
        }),
    )
}

fn reply(fid: u64, ts: u32, parent: &Message) -> Message {
    let parent_fid = parent.data.as_ref().unwrap().fid;
    message(
        fid,
        ts,
        MessageType::CastAdd,
        message_data::Body::CastAddBody(CastAddBody {
            text: format!("reply at {ts}"),
            parent: Some(waypoint_proto::cast_add_body::Parent::ParentCastId(
                CastId {
                    fid: parent_fid,
                    hash: parent.hash.clone(),
                },
            )),
            ..Default::default()
        }),
    )
}

fn cast_remove(fid: u64, ts: u32, target: &Message) -> Message {
    message(
        fid,
        ts,
        MessageType::CastRemove,
        message_data::Body::CastRemoveBody(CastRemoveBody {
            target_hash: target.hash.clone(),
        }),
    )
}

fn reaction(fid: u64, ts: u32, kind: MessageType, target_url: &str) -> Message {
    message(
        fid,
        ts,
        kind,
        message_data::Body::ReactionBody(ReactionBody {
            r#type: 1,
            target: Some(reaction_body::Target::TargetUrl(target_url.into())),
        }),
    )
}

fn link(fid: u64, ts: u32, kind: MessageType, target: u64) -> Message {
    message(
        fid,
        ts,
        kind,
        message_data::Body::LinkBody(LinkBody {
            r#type: "follow".into(),
            display_timestamp: None,
            target: Some(link_body::Target::TargetFid(target)),
        }),
    )
}

fn compact(fid: u64, ts: u32, targets: &[u64]) -> Message {
    message(
        fid,
        ts,
        MessageType::LinkCompactState,
        message_data::Body::LinkCompactStateBody(LinkCompactStateBody {
            r#type: "follow".into(),
            target_fids: targets.to_vec(),
        }),
    )
}

fn user_data(fid: u64, ts: u32, value: &str) -> Message {
    message(
        fid,
        ts,
        MessageType::UserDataAdd,
        message_data::Body::UserDataBody(UserDataBody {
            r#type: 6,
            value: value.into(),
        }),
    )
}

fn verification(fid: u64, ts: u32, address: u8, remove: bool) -> Message {
    if remove {
        message(
            fid,
            ts,
            MessageType::VerificationRemove,
            message_data::Body::VerificationRemoveBody(VerificationRemoveBody {
                address: vec![address; 20],
                protocol: 0,
            }),
        )
    } else {
        message(
            fid,
            ts,
            MessageType::VerificationAddEthAddress,
            message_data::Body::VerificationAddAddressBody(VerificationAddAddressBody {
                address: vec![address; 20],
                block_hash: vec![9; 32],
                ..Default::default()
            }),
        )
    }
}

fn proof_event(name: &str, fid: u64, ts: u64, deleted: Option<(&str, u64, u64)>) -> HubEvent {
    let proof = |name: &str, fid: u64, ts: u64| UserNameProof {
        timestamp: ts,
        name: name.as_bytes().to_vec(),
        owner: vec![fid as u8; 20],
        signature: vec![1; 65],
        fid,
        r#type: 1,
    };
    HubEvent {
        r#type: HubEventType::MergeUsernameProof as i32,
        id: 1,
        body: Some(hub_event::Body::MergeUsernameProofBody(
            MergeUserNameProofBody {
                username_proof: Some(proof(name, fid, ts)),
                deleted_username_proof: deleted.map(|(name, fid, ts)| proof(name, fid, ts)),
                username_proof_message: None,
                deleted_username_proof_message: None,
            },
        )),
        block_number: 1,
        shard_index: 1,
        timestamp: 100,
    }
}

struct Db {
    test: TestDb,
    pg: Pg,
}

impl Db {
    async fn new() -> Db {
        let test = TestDb::new().await;
        let pg = Pg::connect(&test.config()).await.expect("connect");
        migrate(&pg).await.expect("migrate");
        Db { test, pg }
    }

    async fn apply(&self, events: &[HubEvent]) {
        let mut client = self.pg.get().await.unwrap();
        let inputs: Vec<EventInput<'_>> = events
            .iter()
            .map(|event| EventInput { event, raw: None })
            .collect();
        apply_events(
            &mut client,
            &inputs,
            &ApplyOptions {
                store_messages: true,
            },
        )
        .await
        .expect("apply");
    }

    async fn state(&self) -> ReplicaState {
        let client = self.pg.get().await.unwrap();
        read_replica(&**client).await.unwrap()
    }

    async fn cleanup(self) {
        self.pg.close();
        self.test.cleanup().await;
    }
}

fn live_hashes<T>(rows: &[T], hash: impl Fn(&T) -> (&str, bool)) -> Vec<String> {
    rows.iter()
        .filter(|row| hash(row).1)
        .map(|row| hash(row).0.to_owned())
        .collect()
}

fn hex(message: &Message) -> String {
    hex::encode(&message.hash)
}

#[tokio::test]
async fn a_cast_remove_wins_whichever_arrives_first() {
    let db = Db::new().await;
    let first = cast(1, 10, "first");
    let second = cast(1, 11, "second");
    let remove_first = cast_remove(1, 12, &first);
    let remove_second = cast_remove(1, 13, &second);
    // Remove before its add (in another batch), and add before its remove.
    db.apply(&[merge(&remove_first)]).await;
    db.apply(&[merge(&first), merge(&second)]).await;
    db.apply(&[merge(&remove_second), merge(&remove_second)])
        .await;
    db.apply(&[merge(&first)]).await;
    let state = db.state().await;
    assert_eq!(state.casts.len(), 2, "removed casts stay as rows");
    assert!(state.casts.iter().all(|c| !c.live), "{:?}", state.casts);
    db.cleanup().await;
}

#[tokio::test]
async fn reactions_follow_latest_timestamp_then_remove_then_hash() {
    let db = Db::new().await;
    let like = reaction(1, 10, MessageType::ReactionAdd, "https://a");
    let unlike = reaction(1, 20, MessageType::ReactionRemove, "https://a");
    let like_again = reaction(1, 30, MessageType::ReactionAdd, "https://a");
    db.apply(&[merge(&like_again)]).await;
    db.apply(&[merge(&unlike), merge(&like)]).await;
    let state = db.state().await;
    assert_eq!(state.reactions.len(), 2);
    assert_eq!(
        live_hashes(&state.reactions, |r| (&r.hash, r.live)),
        [hex(&like_again)]
    );

    // Unlike after the second like: nothing is live.
    let unlike_again = reaction(1, 40, MessageType::ReactionRemove, "https://a");
    db.apply(&[merge(&unlike_again)]).await;
    assert!(db.state().await.reactions.iter().all(|r| !r.live));

    // At equal timestamps a remove beats an add...
    let tie_add = reaction(2, 50, MessageType::ReactionAdd, "https://b");
    let tie_remove = reaction(2, 50, MessageType::ReactionRemove, "https://b");
    db.apply(&[merge(&tie_add), merge(&tie_remove)]).await;
    // ...and between two adds the higher hash wins.
    let add_a = reaction(3, 60, MessageType::ReactionAdd, "https://c");
    let mut add_b = add_a.clone();
    // A second add at the same time: same key, another message (signed again with other data).
    add_b = {
        let mut data = add_b.data.clone().unwrap();
        data.network = 2;
        sign_message(data, &key(3))
    };
    db.apply(&[merge(&add_a)]).await;
    db.apply(&[merge(&add_b)]).await;
    let state = db.state().await;
    let tie = state
        .reactions
        .iter()
        .find(|r| r.hash == hex(&tie_add))
        .unwrap();
    assert!(!tie.live, "remove beats add on a tie");
    let winner = if add_a.hash > add_b.hash {
        &add_a
    } else {
        &add_b
    };
    let live: Vec<String> = state
        .reactions
        .iter()
        .filter(|r| r.fid == 3 && r.live)
        .map(|r| r.hash.clone())
        .collect();
    assert_eq!(live, [hex(winner)]);
    db.cleanup().await;
}

#[tokio::test]
async fn unfollow_then_refollow_and_compact_state() {
    let db = Db::new().await;
    let follow = link(1, 10, MessageType::LinkAdd, 7);
    let unfollow = link(1, 20, MessageType::LinkRemove, 7);
    let refollow = link(1, 30, MessageType::LinkAdd, 7);
    db.apply(&[merge(&refollow), merge(&unfollow)]).await;
    db.apply(&[merge(&follow)]).await;
    let state = db.state().await;
    assert_eq!(
        live_hashes(&state.links, |l| (&l.hash, l.live)),
        [hex(&refollow)]
    );

    // Compact state at t=40 keeps only target 8: the follow of 7 (t=30) leaves; a follow of 9
    // made after the compaction (t=50) stays.
    let follow_8 = link(1, 35, MessageType::LinkAdd, 8);
    let follow_9 = link(1, 50, MessageType::LinkAdd, 9);
    db.apply(&[merge(&follow_8), merge(&follow_9)]).await;
    db.apply(&[merge(&compact(1, 40, &[8]))]).await;
    let state = db.state().await;
    let mut live = live_hashes(&state.links, |l| (&l.hash, l.live));
    live.sort();
    let mut expected = vec![hex(&follow_8), hex(&follow_9)];
    expected.sort();
    assert_eq!(live, expected);
    db.cleanup().await;
}

#[tokio::test]
async fn verifications_add_remove_by_address() {
    let db = Db::new().await;
    let add = verification(1, 10, 0xaa, false);
    let remove = verification(1, 20, 0xaa, true);
    let other = verification(1, 15, 0xbb, false);
    db.apply(&[merge(&remove), merge(&other)]).await;
    db.apply(&[merge(&add)]).await;
    let state = db.state().await;
    assert_eq!(
        live_hashes(&state.verifications, |v| (&v.hash, v.live)),
        [hex(&other)]
    );
    db.cleanup().await;
}

#[tokio::test]
async fn user_data_keeps_the_newest_value_whatever_the_order() {
    let db = Db::new().await;
    let old = user_data(1, 10, "alice");
    let new = user_data(1, 20, "alice2");
    db.apply(&[merge(&new)]).await;
    db.apply(&[merge(&old)]).await;
    let state = db.state().await;
    assert_eq!(state.user_data.len(), 1);
    assert_eq!(state.user_data[0].value, "alice2");
    assert!(state.user_data[0].live);
    // Within one batch too.
    let newer = user_data(1, 30, "alice3");
    db.apply(&[merge(&newer), merge(&old), merge(&new)]).await;
    assert_eq!(db.state().await.user_data[0].value, "alice3");
    db.cleanup().await;
}

#[tokio::test]
async fn username_proofs_transfer_and_delete() {
    let db = Db::new().await;
    db.apply(&[proof_event("alice", 1, 1000, None)]).await;
    // Transferred to fid 2: the newer proof takes the name.
    db.apply(&[proof_event("alice", 2, 2000, Some(("alice", 1, 1000)))])
        .await;
    let state = db.state().await;
    assert_eq!(state.username_proofs.len(), 1);
    assert_eq!(state.username_proofs[0].fid, 2);
    assert!(state.username_proofs[0].live);
    // fid 2 switches to "bob": its "alice" proof is deleted (arriving before the bob proof).
    db.apply(&[proof_event("bob", 2, 3000, Some(("alice", 2, 2000)))])
        .await;
    let state = db.state().await;
    let alice = state
        .username_proofs
        .iter()
        .find(|p| p.name == "alice")
        .unwrap();
    let bob = state
        .username_proofs
        .iter()
        .find(|p| p.name == "bob")
        .unwrap();
    assert!(!alice.live);
    assert!(bob.live);
    db.cleanup().await;
}

#[tokio::test]
async fn prune_and_revoke_take_messages_out_before_or_after_their_add() {
    let db = Db::new().await;
    let pruned_later = cast(1, 10, "pruned after it arrived");
    let pruned_first = cast(1, 11, "pruned before it arrived");
    let revoked = reaction(1, 12, MessageType::ReactionAdd, "https://r");
    let profile = user_data(1, 13, "carol");
    db.apply(&[merge(&pruned_later), merge(&profile)]).await;
    db.apply(&[
        prune(&pruned_later),
        prune(&pruned_first),
        revoke(&revoked),
        revoke(&profile),
    ])
    .await;
    db.apply(&[merge(&pruned_first), merge(&revoked)]).await;
    let state = db.state().await;
    assert_eq!(state.casts.len(), 2);
    assert!(state.casts.iter().all(|c| !c.live));
    assert_eq!(state.reactions.len(), 1);
    assert!(!state.reactions[0].live);
    assert!(!state.user_data[0].live);
    db.cleanup().await;
}

#[tokio::test]
async fn merge_failures_and_block_events_are_not_applied() {
    let db = Db::new().await;
    let failed = cast(1, 10, "failed to merge");
    let event = HubEvent {
        r#type: HubEventType::MergeFailure as i32,
        body: Some(hub_event::Body::MergeFailure(
            waypoint_proto::MergeFailureBody {
                message: Some(failed),
                code: "bad_request".into(),
                reason: "no storage".into(),
            },
        )),
        ..merge(&cast(1, 1, "x"))
    };
    let block = HubEvent {
        r#type: HubEventType::BlockConfirmed as i32,
        body: Some(hub_event::Body::BlockConfirmedBody(Default::default())),
        ..event.clone()
    };
    db.apply(&[event, block]).await;
    assert_eq!(db.state().await.num_rows(), 0);
    db.cleanup().await;
}

#[tokio::test]
async fn hostile_text_is_stored_safely() {
    let db = Db::new().await;
    let nul = cast(1, 10, "nul\0byte");
    let sql = cast(
        1,
        11,
        "'); DROP TABLE casts; -- \u{202e}evil\u{202c} 🚀 \"quoted\" \\ backslash",
    );
    let long = cast(1, 12, &"é".repeat(512));
    db.apply(&[merge(&nul), merge(&sql), merge(&long)]).await;
    let state = db.state().await;
    let text = |m: &Message| {
        state
            .casts
            .iter()
            .find(|c| c.hash == hex(m))
            .unwrap()
            .text
            .clone()
    };
    assert_eq!(text(&nul), "nul\u{FFFD}byte");
    assert_eq!(
        text(&sql),
        "'); DROP TABLE casts; -- \u{202e}evil\u{202c} 🚀 \"quoted\" \\ backslash"
    );
    assert_eq!(text(&long).chars().count(), 512);
    db.cleanup().await;
}

#[tokio::test]
async fn onchain_events_are_idempotent() {
    let db = Db::new().await;
    let event = HubEvent {
        r#type: HubEventType::MergeOnChainEvent as i32,
        body: Some(hub_event::Body::MergeOnChainEventBody(
            waypoint_proto::MergeOnChainEventBody {
                on_chain_event: Some(OnChainEvent {
                    r#type: 3,
                    chain_id: 10,
                    block_number: 100,
                    block_timestamp: 1_700_000_000,
                    transaction_hash: vec![5; 32],
                    log_index: 2,
                    fid: 9,
                    ..Default::default()
                }),
            },
        )),
        ..merge(&cast(1, 1, "x"))
    };
    db.apply(&[event.clone(), event.clone()]).await;
    db.apply(&[event]).await;
    let state = db.state().await;
    assert_eq!(state.onchain_events.len(), 1);
    assert_eq!(state.onchain_events[0].fid, 9);
    db.cleanup().await;
}

#[tokio::test]
async fn replies_point_at_the_root_of_their_thread_in_any_order() {
    let db = Db::new().await;
    let root = cast(1, 10, "root");
    let a = reply(2, 11, &root);
    let b = reply(3, 12, &a);
    let c = reply(4, 13, &b);
    // Leaves first, root last, across batches; then a chain inside one batch.
    db.apply(&[merge(&c)]).await;
    db.apply(&[merge(&b)]).await;
    db.apply(&[merge(&a), merge(&root)]).await;
    // A thread of four arriving in one batch, leaves first, under a parent already stored.
    let top = cast(5, 20, "top");
    db.apply(&[merge(&top)]).await;
    let x = reply(6, 21, &top);
    let y = reply(7, 22, &x);
    let z = reply(8, 23, &y);
    let w = reply(9, 24, &z);
    db.apply(&[merge(&w), merge(&z), merge(&y), merge(&x)])
        .await;
    let client = db.pg.get().await.unwrap();
    for (message, root, root_fid) in [
        (&a, &root, 1),
        (&b, &root, 1),
        (&c, &root, 1),
        (&x, &top, 5),
        (&y, &top, 5),
        (&z, &top, 5),
        (&w, &top, 5),
    ] {
        let row = client
            .query_one(
                "SELECT root_parent_hash, root_parent_fid FROM casts WHERE hash = $1",
                &[&message.hash],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, Vec<u8>>(0),
            root.hash,
            "root of {}",
            hex(message)
        );
        assert_eq!(row.get::<_, i64>(1), root_fid);
    }
    drop(client);
    db.cleanup().await;
}

/// A random history over a few fids with competing adds and removes on shared keys, prunes
/// and revokes.
fn random_history(seed: u64) -> Vec<HubEvent> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    let mut casts: Vec<Message> = Vec::new();
    for step in 0..120u32 {
        let fid = rng.random_range(1..=3u64);
        let ts = 1000 + rng.random_range(0..40u32) + step / 4;
        let target = rng.random_range(1..=4u64);
        let event = match rng.random_range(0..10) {
            0 | 1 => {
                let message = cast(fid, ts, &format!("cast {step}"));
                casts.push(message.clone());
                merge(&message)
            }
            2 if !casts.is_empty() => {
                let target = casts[rng.random_range(0..casts.len())].clone();
                let owner = target.data.as_ref().unwrap().fid;
                merge(&cast_remove(owner, ts, &target))
            }
            3 => merge(&reaction(
                fid,
                ts,
                MessageType::ReactionAdd,
                &format!("https://t/{target}"),
            )),
            4 => merge(&reaction(
                fid,
                ts,
                MessageType::ReactionRemove,
                &format!("https://t/{target}"),
            )),
            5 => merge(&link(fid, ts, MessageType::LinkAdd, target)),
            6 => merge(&link(fid, ts, MessageType::LinkRemove, target)),
            7 => merge(&user_data(fid, ts, &format!("name{step}"))),
            8 => merge(&verification(fid, ts, target as u8, rng.random_bool(0.4))),
            _ => {
                let victim = link(fid, ts, MessageType::LinkAdd, target);
                events.push(merge(&victim));
                if rng.random_bool(0.5) {
                    prune(&victim)
                } else {
                    revoke(&victim)
                }
            }
        };
        events.push(event);
    }
    events
}

#[tokio::test]
async fn shuffled_duplicated_and_rebatched_histories_converge() {
    for seed in [1u64, 2, 3] {
        let history = random_history(seed);
        let in_order = Db::new().await;
        for event in &history {
            in_order.apply(std::slice::from_ref(event)).await;
        }
        let expected = in_order.state().await;
        in_order.cleanup().await;
        assert!(expected.num_rows() > 50, "a meaningful history");

        let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100);
        for round in 0..2 {
            let mut shuffled: Vec<HubEvent> = history.clone();
            let duplicates: Vec<HubEvent> = history
                .iter()
                .filter(|_| rng.random_bool(0.3))
                .cloned()
                .collect();
            shuffled.extend(duplicates);
            shuffled.shuffle(&mut rng);
            let db = Db::new().await;
            let mut rest: &[HubEvent] = &shuffled;
            while !rest.is_empty() {
                let size = rng.random_range(1..=40).min(rest.len());
                db.apply(&rest[..size]).await;
                rest = &rest[size..];
            }
            let actual = db.state().await;
            db.cleanup().await;
            let diff = expected.diff(&actual, 5);
            assert!(diff.is_empty(), "seed {seed} round {round}: {diff:#?}");
        }
    }
}

#[tokio::test]
async fn concurrent_batches_on_the_same_keys_converge() {
    let db = Db::new().await;
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for i in 0..50u32 {
        adds.push(merge(&reaction(
            1,
            100 + i * 2,
            MessageType::ReactionAdd,
            "https://hot",
        )));
        removes.push(merge(&reaction(
            1,
            101 + i * 2,
            MessageType::ReactionRemove,
            "https://hot",
        )));
    }
    let last_add = merge(&reaction(1, 1000, MessageType::ReactionAdd, "https://hot"));
    let (a, b) = (db.pg.clone(), db.pg.clone());
    let run = |pg: Pg, events: Vec<HubEvent>| async move {
        for chunk in events.chunks(5) {
            let mut client = pg.get().await.unwrap();
            let inputs: Vec<EventInput<'_>> = chunk
                .iter()
                .map(|event| EventInput { event, raw: None })
                .collect();
            apply_events(&mut client, &inputs, &ApplyOptions::default())
                .await
                .unwrap();
        }
    };
    let mut second = removes.clone();
    second.push(last_add.clone());
    tokio::join!(run(a, adds), run(b, second));
    let state = db.state().await;
    let live: Vec<&str> = state
        .reactions
        .iter()
        .filter(|r| r.live)
        .map(|r| r.hash.as_str())
        .collect();
    let hub_event::Body::MergeMessageBody(body) = last_add.body.as_ref().unwrap() else {
        unreachable!()
    };
    assert_eq!(live, [hex::encode(&body.message.as_ref().unwrap().hash)]);
    let _ = FARCASTER_EPOCH_UNIX_SECONDS;
    db.cleanup().await;
}
