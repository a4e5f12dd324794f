//! The PostgreSQL side of the query layer (`query::db::DbReader`) against a database filled
//! through the streaming path from the dev hub, checked against the hub's own state
//! (`dump_state`): the right live items in the right order, pages walked to the end giving
//! every item exactly once (also while new rows arrive), not-found cases, removed items absent,
//! the following feed and text search.
//!
//! One filled database serves every check: filling it is most of the run time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use common::harness::{self, devhub, small_hub, wait_converged};
use common::{TestDb, TestRedis};
use waypoint::cli::Role;
use waypoint::devhub::{DevHubHandle, Faults};
use waypoint::query::SourceError;
use waypoint::query::cursor::{Cursor, Position};
use waypoint::query::db::DbReader;
use waypoint::query::model::*;
use waypoint::replica::{CastRow, EmbedRow, LinkRow, ReactionRow, ReplicaState};
use waypoint::service::Service;
use waypoint::store::Pg;

const CONVERGE: Duration = Duration::from_secs(90);
const EPOCH: u64 = 1_609_459_200;
/// Small pages, so every list spans several.
const LIMIT: u32 = 3;

#[tokio::test]
async fn every_query_answers_the_live_rows_of_the_hub_in_order() {
    let hub = devhub(small_hub(41)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(
        &db,
        &redis,
        &hub.url(),
        &[
            ("WAYPOINT_REST__ENABLED", "false".into()),
            ("WAYPOINT_MCP__ENABLED", "false".into()),
        ],
    );
    let service = Service::start(Role::Both, harness::config(&env), None)
        .await
        .expect("service starts");
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    // Live history with prunes, revokes and compact states, so some rows are not live.
    hub.set_faults(Faults {
        prune_rate: 0.05,
        revoke_rate: 0.05,
        compact_state_rate: 0.05,
        ..Faults::default()
    });
    for _ in 0..4 {
        hub.append_live(40);
    }
    hub.set_faults(Faults::default());
    wait_converged(&hub, &pg, CONVERGE).await;

    let reader = DbReader { pg: pg.clone() };
    let all = hub.dump_state();
    let live = all.live_only();

    casts(&reader, &all, &live).await;
    reactions(&reader, &all, &live).await;
    links(&reader, &all, &live, &pg).await;
    verifications(&reader, &live).await;
    profiles_and_names(&reader, &live).await;
    onchain_events(&reader, &live).await;
    following_feed(&reader, &live).await;
    search(&reader, &live).await;
    cursors_of_other_sources(&reader).await;
    pages_while_rows_arrive(&reader, &hub, &pg).await;

    service.shutdown().await.expect("service stops");
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_database_is_a_database_error() {
    let mut config = TestDb::reserve().config();
    config.url = "postgresql://postgres@127.0.0.1:1/none".into();
    config.timeout_seconds = 2;
    let reader = DbReader {
        pg: Pg::new(&config).expect("pool builds without connecting"),
    };
    let error = reader.cast(1, vec![0; 20]).await.unwrap_err();
    assert!(matches!(error, SourceError::Database(_)), "{error}");
    let error = reader.follow_counts(1).await.unwrap_err();
    assert!(matches!(error, SourceError::Database(_)), "{error}");
}

async fn casts(reader: &DbReader, all: &ReplicaState, live: &ReplicaState) {
    let fids: BTreeSet<u64> = all.casts.iter().map(|row| row.fid).collect();
    for fid in fids.iter().copied().chain([9_999_999, u64::MAX]) {
        let expected = newest_casts(live.casts.iter().filter(|row| row.fid == fid));
        let walked = walk(|page| reader.casts_by_fid(fid, page)).await;
        assert_eq!(walked, expected, "casts_by_fid {fid}");
    }

    // One cast by its key; a removed or pruned one is absent, as is an unknown hash.
    let first = &live.casts[0];
    let found = reader
        .cast(first.fid, hex_bytes(&first.hash))
        .await
        .unwrap();
    assert_eq!(found, Some(cast_of(first)));
    assert_eq!(
        reader
            .cast(first.fid + 1, hex_bytes(&first.hash))
            .await
            .unwrap(),
        None
    );
    assert_eq!(reader.cast(first.fid, vec![7; 20]).await.unwrap(), None);
    let gone: Vec<&CastRow> = all.casts.iter().filter(|row| !row.live).collect();
    assert!(!gone.is_empty(), "the dataset removes casts");
    for row in &gone {
        assert_eq!(
            reader.cast(row.fid, hex_bytes(&row.hash)).await.unwrap(),
            None
        );
        let listed = walk(|page| reader.casts_by_fid(row.fid, page)).await;
        assert!(listed.iter().all(|cast| cast.hash != row.hash));
    }

    // The fid mentioned most.
    let mut mentioned: BTreeMap<u64, usize> = BTreeMap::new();
    for row in &live.casts {
        for fid in row.mentions.iter().collect::<BTreeSet<_>>() {
            *mentioned.entry(*fid).or_default() += 1;
        }
    }
    let (&fid, &count) = mentioned.iter().max_by_key(|(_, count)| **count).unwrap();
    assert!(count > LIMIT as usize, "a fid mentioned on several pages");
    let expected = newest_casts(live.casts.iter().filter(|row| row.mentions.contains(&fid)));
    assert_eq!(
        walk(|page| reader.casts_by_mention(fid, page)).await,
        expected
    );

    // The cast with most replies.
    let mut replies: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for row in &live.casts {
        if let (Some(fid), Some(hash)) = (row.parent_fid, &row.parent_hash) {
            *replies.entry((fid, hash.clone())).or_default() += 1;
        }
    }
    let ((parent_fid, parent_hash), _) = replies.iter().max_by_key(|(_, count)| **count).unwrap();
    let expected = newest_casts(live.casts.iter().filter(|row| {
        row.parent_fid == Some(*parent_fid) && row.parent_hash.as_ref() == Some(parent_hash)
    }));
    assert!(!expected.is_empty());
    let walked =
        walk(|page| reader.casts_by_parent(*parent_fid, hex_bytes(parent_hash), page)).await;
    assert_eq!(walked, expected);
    let none = walk(|page| reader.casts_by_parent(*parent_fid, vec![1; 20], page)).await;
    assert!(none.is_empty());

    // The channel with most casts.
    let mut channels: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &live.casts {
        if let Some(url) = &row.parent_url {
            *channels.entry(url).or_default() += 1;
        }
    }
    let (url, &count) = channels.iter().max_by_key(|(_, count)| **count).unwrap();
    assert!(count > LIMIT as usize);
    let expected = newest_casts(
        live.casts
            .iter()
            .filter(|row| row.parent_url.as_deref() == Some(*url)),
    );
    assert_eq!(
        walk(|page| reader.casts_by_parent_url(url.to_string(), page)).await,
        expected
    );
    let none =
        walk(|page| reader.casts_by_parent_url("https://nowhere.example/\0'".into(), page)).await;
    assert!(none.is_empty());

    // A window in the middle of the busiest fid's history, both ends inclusive (Unix seconds).
    let busiest = busiest(live.casts.iter().map(|row| row.fid));
    let times: Vec<u64> = newest_casts(live.casts.iter().filter(|row| row.fid == busiest))
        .iter()
        .map(|cast| cast.timestamp)
        .collect();
    assert!(times.len() > 4, "a fid with many casts");
    let window = TimeWindow {
        start: Some(times[times.len() - 2] + EPOCH),
        end: Some(times[1] + EPOCH),
    };
    let expected: Vec<Cast> = newest_casts(live.casts.iter().filter(|row| row.fid == busiest))
        .into_iter()
        .filter(|cast| cast.timestamp >= times[times.len() - 2] && cast.timestamp <= times[1])
        .collect();
    assert_eq!(
        walk(|page| reader.casts_by_fid_in_window(busiest, window, page)).await,
        expected
    );
    let empty = TimeWindow {
        start: Some(times[0] + EPOCH + 1),
        end: None,
    };
    assert!(
        walk(|page| reader.casts_by_fid_in_window(busiest, empty, page))
            .await
            .is_empty()
    );
}

async fn reactions(reader: &DbReader, all: &ReplicaState, live: &ReplicaState) {
    let fids: BTreeSet<u64> = live.reactions.iter().map(|row| row.fid).collect();
    for fid in fids {
        let mine: Vec<&ReactionRow> = live.reactions.iter().filter(|row| row.fid == fid).collect();
        let expected = newest_reactions(mine.iter().copied());
        assert_eq!(
            walk(|page| reader.reactions_by_fid(fid, None, page)).await,
            expected
        );
        let likes = newest_reactions(mine.iter().copied().filter(|row| row.reaction_type == 1));
        assert_eq!(
            walk(|page| reader.reactions_by_fid(fid, Some(ReactionType::Like), page)).await,
            likes
        );
        let everything = TimeWindow::default();
        assert_eq!(
            walk(|page| reader.reactions_by_fid_in_window(fid, everything, page)).await,
            expected
        );
    }

    // By target: the most reacted-to cast and URL.
    let cast_target = busiest(
        live.reactions
            .iter()
            .filter_map(|row| Some((row.target_cast_fid?, row.target_cast_hash.clone()?))),
    );
    let expected = newest_reactions(live.reactions.iter().filter(|row| {
        row.target_cast_fid == Some(cast_target.0)
            && row.target_cast_hash.as_ref() == Some(&cast_target.1)
    }));
    let target = CastTarget::Cast {
        fid: cast_target.0,
        hash: cast_target.1.clone(),
    };
    assert_eq!(
        walk(|page| reader.reactions_by_target(target.clone(), None, page)).await,
        expected
    );
    let recasts: Vec<Reaction> = expected
        .iter()
        .filter(|reaction| reaction.reaction_type == ReactionType::Recast)
        .cloned()
        .collect();
    assert_eq!(
        walk(|page| reader.reactions_by_target(target.clone(), Some(ReactionType::Recast), page))
            .await,
        recasts
    );
    let url_target = busiest(
        live.reactions
            .iter()
            .filter_map(|row| row.target_url.clone()),
    );
    let expected_url = newest_reactions(
        live.reactions
            .iter()
            .filter(|row| row.target_url.as_ref() == Some(&url_target)),
    );
    assert!(!expected_url.is_empty());
    let target_url = CastTarget::Url { url: url_target };
    assert_eq!(
        walk(|page| reader.reactions_by_target(target_url.clone(), None, page)).await,
        expected_url
    );

    // One reaction by its key; a removed (unliked) one is absent.
    for reaction in expected.iter().chain(&expected_url) {
        let found = reader
            .reaction(
                reaction.fid,
                reaction.reaction_type,
                reaction.target.clone(),
            )
            .await
            .unwrap();
        assert_eq!(found.as_ref(), Some(reaction));
    }
    let removed: Vec<&ReactionRow> = all
        .reactions
        .iter()
        .filter(|row| {
            !row.live
                && !live.reactions.iter().any(|other| {
                    other.fid == row.fid
                        && other.reaction_type == row.reaction_type
                        && other.target_cast_hash == row.target_cast_hash
                        && other.target_url == row.target_url
                })
        })
        .collect();
    assert!(!removed.is_empty(), "the dataset removes reactions");
    for row in removed {
        let reaction = reaction_of(row);
        let found = reader
            .reaction(row.fid, reaction.reaction_type, reaction.target.clone())
            .await
            .unwrap();
        assert_eq!(found, None, "removed reaction {}", row.hash);
    }
    let bad_hash = CastTarget::Cast {
        fid: 1,
        hash: "not hex".into(),
    };
    assert_eq!(
        reader
            .reaction(1, ReactionType::Like, bad_hash.clone())
            .await
            .unwrap(),
        None
    );
    assert!(
        walk(|page| reader.reactions_by_target(bad_hash.clone(), None, page))
            .await
            .is_empty()
    );
}

async fn links(reader: &DbReader, all: &ReplicaState, live: &ReplicaState, pg: &Pg) {
    let fids: BTreeSet<u64> = all
        .links
        .iter()
        .flat_map(|row| [row.fid, row.target_fid])
        .collect();
    for fid in fids {
        let following = newest_links(live.links.iter().filter(|row| row.fid == fid));
        assert_eq!(
            walk(|page| reader.links_by_fid(fid, None, page)).await,
            following
        );
        assert_eq!(
            walk(|page| reader.links_by_fid(fid, Some("follow".into()), page)).await,
            following
        );
        assert!(
            walk(|page| reader.links_by_fid(fid, Some("block".into()), page))
                .await
                .is_empty()
        );
        let window = TimeWindow::default();
        assert_eq!(
            walk(|page| reader.links_by_fid_in_window(fid, window, page)).await,
            following
        );
        let followers = newest_links(live.links.iter().filter(|row| row.target_fid == fid));
        assert_eq!(
            walk(|page| reader.links_by_target(fid, Some("follow".into()), page)).await,
            followers
        );
        assert_eq!(
            walk(|page| reader.links_by_target(fid, None, page)).await,
            followers
        );
        assert_eq!(
            reader.follow_counts(fid).await.unwrap(),
            (followers.len() as u64, following.len() as u64)
        );
        for link in &following {
            let found = reader
                .link(fid, "follow".into(), link.target_fid)
                .await
                .unwrap();
            assert_eq!(found.as_ref(), Some(link));
        }
    }
    // An unfollow sticks: a link whose key has no live row is absent.
    let unfollowed: Vec<&LinkRow> = all
        .links
        .iter()
        .filter(|row| {
            !live
                .links
                .iter()
                .any(|other| other.fid == row.fid && other.target_fid == row.target_fid)
        })
        .collect();
    assert!(!unfollowed.is_empty(), "the dataset unfollows");
    for row in unfollowed {
        assert_eq!(
            reader
                .link(row.fid, row.link_type.clone(), row.target_fid)
                .await
                .unwrap(),
            None
        );
        let followers = walk(|page| reader.links_by_target(row.target_fid, None, page)).await;
        assert!(followers.iter().all(|link| link.fid != row.fid));
    }
    assert_eq!(
        reader.link(1, "follow".into(), u64::MAX).await.unwrap(),
        None
    );

    // Compact states: as the table holds them; none for a fid that never compacted.
    let client = pg.get().await.unwrap();
    let compacted: Vec<(i64, String, Vec<i64>)> = client
        .query(
            "SELECT fid, type, target_fids FROM link_compact_states ORDER BY fid, type",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert!(
        !compacted.is_empty(),
        "the live history merged compact states"
    );
    for (fid, link_type, targets) in &compacted {
        let states = reader.link_compact_state(*fid as u64).await.unwrap();
        let state = states
            .iter()
            .find(|state| &state.link_type == link_type)
            .unwrap();
        assert_eq!(state.fid, *fid as u64);
        assert_eq!(state.hash.len(), 40);
        let targets: Vec<u64> = targets.iter().map(|fid| *fid as u64).collect();
        assert_eq!(state.target_fids, targets);
    }
    assert!(
        reader
            .link_compact_state(9_999_999)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn verifications(reader: &DbReader, live: &ReplicaState) {
    let fids: BTreeSet<u64> = live.verifications.iter().map(|row| row.fid).collect();
    let mut protocols = BTreeSet::new();
    for fid in fids {
        let mut rows: Vec<_> = live
            .verifications
            .iter()
            .filter(|row| row.fid == fid)
            .collect();
        rows.sort_by(|a, b| (b.timestamp, &b.hash).cmp(&(a.timestamp, &a.hash)));
        let walked = walk(|page| reader.verifications_by_fid(fid, page)).await;
        let window = TimeWindow::default();
        assert_eq!(
            walk(|page| reader.verifications_by_fid_in_window(fid, window, page)).await,
            walked
        );
        let keys: Vec<(String, u64, String, String)> = walked
            .iter()
            .map(|v| {
                (
                    v.hash.clone(),
                    v.timestamp,
                    v.address.clone(),
                    v.protocol.clone(),
                )
            })
            .collect();
        let expected: Vec<(String, u64, String, String)> = rows
            .iter()
            .map(|row| {
                let address = verification_address(row.protocol, &hex_bytes(&row.address));
                let protocol = verification_protocol_name(row.protocol).to_owned();
                (row.hash.clone(), row.timestamp, address, protocol)
            })
            .collect();
        assert_eq!(keys, expected, "verifications of {fid}");
        for verification in &walked {
            protocols.insert(verification.protocol.clone());
            assert_eq!(verification.fid, fid);
            assert!(
                verification.address.starts_with("0x") == (verification.protocol == "ethereum")
            );
            let found = reader
                .verification(fid, verification.address.clone())
                .await
                .unwrap();
            assert_eq!(found.as_ref(), Some(verification));
            // Ethereum addresses in any case.
            let shouted = verification.address.to_uppercase().replacen("0X", "0x", 1);
            if verification.protocol == "ethereum" {
                let found = reader.verification(fid, shouted).await.unwrap();
                assert_eq!(found.as_ref(), Some(verification));
            }
            assert_eq!(
                reader
                    .verification(fid + 1, verification.address.clone())
                    .await
                    .unwrap(),
                None
            );
        }
    }
    assert_eq!(
        protocols,
        BTreeSet::from(["ethereum".to_owned(), "solana".to_owned()])
    );
    for bad in ["", "0x", "0xnothex", "not base58 0OIl", "🦀", "\0"] {
        assert_eq!(
            reader.verification(1, bad.into()).await.unwrap(),
            None,
            "{bad:?}"
        );
    }
}

async fn profiles_and_names(reader: &DbReader, live: &ReplicaState) {
    let fids: BTreeSet<u64> = live
        .user_data
        .iter()
        .map(|row| row.fid)
        .chain(live.username_proofs.iter().map(|row| row.fid))
        .collect();
    for &fid in &fids {
        let profile = reader.profile(fid).await.unwrap().expect("a profile");
        let values: Vec<(i32, String, String)> = profile
            .user_data
            .iter()
            .map(|value| (value.data_type, value.hash.clone(), value.value.clone()))
            .collect();
        let expected: Vec<(i32, String, String)> = live
            .user_data
            .iter()
            .filter(|row| row.fid == fid)
            .map(|row| (row.user_data_type, row.hash.clone(), row.value.clone()))
            .collect();
        assert_eq!(values, expected, "user data of {fid}");
        let named = |data_type: i32| {
            live.user_data
                .iter()
                .find(|row| row.fid == fid && row.user_data_type == data_type)
                .map(|row| row.value.clone())
        };
        assert_eq!(profile.username, named(6));
        assert_eq!(profile.display_name, named(2));
        assert_eq!(profile.bio, named(3));
        let names: Vec<&str> = profile
            .username_proofs
            .iter()
            .map(|proof| proof.name.as_str())
            .collect();
        let expected_names: Vec<&str> = live
            .username_proofs
            .iter()
            .filter(|row| row.fid == fid)
            .map(|row| row.name.as_str())
            .collect();
        assert_eq!(names, expected_names);
        assert_eq!((profile.follower_count, profile.following_count), {
            let (followers, following) = reader.follow_counts(fid).await.unwrap();
            (Some(followers), Some(following))
        });
        let proofs = reader.username_proofs_by_fid(fid).await.unwrap();
        assert_eq!(proofs, profile.username_proofs);
    }
    for row in &live.username_proofs {
        let proof = reader
            .username_proof(row.name.to_uppercase())
            .await
            .unwrap()
            .expect("proof");
        assert_eq!((proof.fid, proof.timestamp), (row.fid, row.timestamp));
        assert_eq!(proof.owner, format!("0x{}", row.owner));
        assert_eq!(proof.proof_type, username_proof_type_name(row.proof_type));
        assert_eq!(
            reader.fid_by_username(row.name.clone()).await.unwrap(),
            Some(row.fid)
        );
    }
    assert_eq!(reader.profile(9_999_999).await.unwrap(), None);
    assert_eq!(reader.profile(u64::MAX).await.unwrap(), None);
    for name in [
        "nobody-here",
        "",
        "'; drop table username_proofs; --",
        "\0",
        "🦀",
    ] {
        assert_eq!(
            reader.fid_by_username(name.into()).await.unwrap(),
            None,
            "{name:?}"
        );
    }
}

async fn onchain_events(reader: &DbReader, live: &ReplicaState) {
    let fids: BTreeSet<u64> = live.onchain_events.iter().map(|row| row.fid).collect();
    for fid in fids {
        let mut expected: Vec<_> = live
            .onchain_events
            .iter()
            .filter(|row| row.fid == fid)
            .collect();
        expected.sort_by_key(|row| std::cmp::Reverse((row.block_number, row.log_index)));
        let expected: Vec<(String, u32, i32, u64)> = expected
            .iter()
            .map(|row| {
                (
                    row.tx_hash.clone(),
                    row.log_index,
                    row.event_type,
                    row.block_timestamp,
                )
            })
            .collect();
        let walked = walk(|page| reader.onchain_events(fid, None, page)).await;
        let keys: Vec<(String, u32, i32, u64)> = walked
            .iter()
            .map(|event| {
                (
                    event.transaction_hash.clone(),
                    event.log_index,
                    event.event_type,
                    event.block_timestamp,
                )
            })
            .collect();
        assert_eq!(keys, expected, "on-chain events of {fid}");
        for event_type in [1, 3, 4] {
            let of_type = walk(|page| reader.onchain_events(fid, Some(event_type), page)).await;
            let expected: Vec<&OnChainEvent> = walked
                .iter()
                .filter(|event| event.event_type == event_type)
                .collect();
            assert_eq!(of_type.iter().collect::<Vec<_>>(), expected);
        }
        assert!(
            walked
                .iter()
                .all(|event| event.event_type_name != "unknown")
        );
    }
    assert!(
        walk(|page| reader.onchain_events(1, Some(99_999), page))
            .await
            .is_empty()
    );
}

async fn following_feed(reader: &DbReader, live: &ReplicaState) {
    let follower = busiest(
        live.links
            .iter()
            .filter(|row| row.link_type == "follow")
            .map(|row| row.fid),
    );
    let followed: BTreeSet<u64> = live
        .links
        .iter()
        .filter(|row| row.fid == follower && row.link_type == "follow")
        .map(|row| row.target_fid)
        .collect();
    assert!(followed.len() > 1);
    let expected = newest_casts(live.casts.iter().filter(|row| followed.contains(&row.fid)));
    assert!(expected.len() > LIMIT as usize);
    assert_eq!(
        walk(|page| reader.following_feed(follower, page)).await,
        expected
    );
    assert!(
        walk(|page| reader.following_feed(9_999_999, page))
            .await
            .is_empty()
    );
}

async fn search(reader: &DbReader, live: &ReplicaState) {
    // A word of some cast's text finds that cast; every match holds the word.
    for word in ["snapchain", "sunset", "deploy"] {
        let holding: Vec<&CastRow> = live
            .casts
            .iter()
            .filter(|row| row.text.split_whitespace().any(|token| token == word))
            .collect();
        assert!(!holding.is_empty(), "some cast says {word}");
        let found = walk(|page| reader.search_casts(word.into(), page)).await;
        for row in &holding {
            assert!(
                found.iter().any(|cast| cast.hash == row.hash),
                "{word}: {}",
                row.hash
            );
        }
        assert!(
            found
                .iter()
                .all(|cast| cast.text.to_lowercase().contains(word))
        );
        let unique: BTreeSet<&str> = found.iter().map(|cast| cast.hash.as_str()).collect();
        assert_eq!(unique.len(), found.len(), "{word}: no repeats across pages");
    }
    let found = walk(|page| reader.search_casts("snapchain -deploy".into(), page)).await;
    assert!(!found.is_empty());
    assert!(found.iter().all(|cast| {
        !cast
            .text
            .to_lowercase()
            .split_whitespace()
            .any(|t| t == "deploy")
    }));
    let long = "gm ".repeat(5000);
    let hostile = [
        "'; DROP TABLE casts; --",
        "\"unclosed",
        "a & | ! ( ) :* <-> \\",
        "\0",
        "zero\0byte",
        "🦀🟪",
        "\u{200F}مرحبا\u{200F}",
        "-",
        "or",
        "   ",
        "%_",
        long.as_str(),
    ];
    for query in hostile {
        let page = reader
            .search_casts(query.into(), page(LIMIT, None))
            .await
            .unwrap_or_else(|error| panic!("search {query:?}: {error}"));
        assert!(page.items.len() <= LIMIT as usize);
    }
}

async fn cursors_of_other_sources(reader: &DbReader) {
    let hub_only = PageRequest {
        limit: LIMIT,
        cursor: Some(Cursor {
            hub_token: Some("00ff".into()),
            after: None,
        }),
    };
    let error = reader.casts_by_fid(1, hub_only.clone()).await.unwrap_err();
    assert!(matches!(error, SourceError::CursorElsewhere), "{error}");
    let error = reader
        .search_casts("gm".into(), hub_only.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, SourceError::CursorElsewhere), "{error}");
    let error = reader.onchain_events(1, None, hub_only).await.unwrap_err();
    assert!(matches!(error, SourceError::CursorElsewhere), "{error}");
    let unreadable = page(
        LIMIT,
        Some(Position {
            timestamp: u64::MAX,
            key: "zz".into(),
        }),
    );
    for result in [
        reader.casts_by_fid(1, unreadable.clone()).await.map(|_| ()),
        reader
            .search_casts("gm".into(), unreadable.clone())
            .await
            .map(|_| ()),
        reader.onchain_events(1, None, unreadable).await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(SourceError::CursorElsewhere)));
    }
    // A position far in the future is simply before everything.
    let future = page(
        LIMIT,
        Some(Position {
            timestamp: u64::MAX,
            key: "ff".into(),
        }),
    );
    assert!(reader.casts_by_fid(1, future).await.is_ok());
}

/// A walk that began before new rows arrived ends with every row that was there when it began
/// (and is still live), none twice, none newer than its first page.
async fn pages_while_rows_arrive(reader: &DbReader, hub: &DevHubHandle, pg: &Pg) {
    let before = hub.dump_state().live_only();
    let fid = busiest(before.casts.iter().map(|row| row.fid));
    let first = reader.casts_by_fid(fid, page(2, None)).await.unwrap();
    let mut seen: Vec<Cast> = first.items.clone();
    let mut cursor = first.next_cursor.clone();
    hub.append_live(120);
    wait_converged(hub, pg, CONVERGE).await;
    let after = hub.dump_state().live_only();
    while let Some(text) = cursor {
        let next = Cursor::decode("cursor", &text).unwrap();
        let page = reader
            .casts_by_fid(fid, page(2, Some(next.after.unwrap())))
            .await
            .unwrap();
        seen.extend(page.items);
        cursor = page.next_cursor;
    }
    let hashes: BTreeSet<&str> = seen.iter().map(|cast| cast.hash.as_str()).collect();
    assert_eq!(hashes.len(), seen.len(), "no cast twice");
    let still_live: BTreeSet<&str> = after.casts.iter().map(|row| row.hash.as_str()).collect();
    let expected: BTreeSet<&str> = before
        .casts
        .iter()
        .filter(|row| row.fid == fid && still_live.contains(row.hash.as_str()))
        .map(|row| row.hash.as_str())
        .collect();
    assert!(
        expected.is_subset(&hashes),
        "every cast that was there is walked"
    );
    let newest_first: Vec<(u64, &str)> = seen
        .iter()
        .map(|cast| (cast.timestamp, cast.hash.as_str()))
        .collect();
    let mut sorted = newest_first.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(newest_first, sorted);
}

/// Every item of a list, page by page with [`LIMIT`] items; checks each full page's size and
/// that the walk ends.
async fn walk<T, F, Fut>(mut fetch: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>, SourceError>>,
{
    let mut items = Vec::new();
    let mut request = page(LIMIT, None);
    for _ in 0..10_000 {
        let page = fetch(request.clone()).await.expect("a page");
        let num_items = page.items.len();
        items.extend(page.items);
        match page.next_cursor {
            Some(text) => {
                assert_eq!(num_items, LIMIT as usize, "a page with a next page is full");
                request.cursor = Some(Cursor::decode("cursor", &text).expect("our cursor"));
            }
            None => return items,
        }
    }
    panic!("the walk does not end");
}

fn page(limit: u32, after: Option<Position>) -> PageRequest {
    PageRequest {
        limit,
        cursor: after.map(|after| Cursor {
            hub_token: None,
            after: Some(after),
        }),
    }
}

fn hex_bytes(text: &str) -> Vec<u8> {
    hex::decode(text).expect("hex from the dump")
}

/// The value that occurs most often (the smallest of the most frequent).
fn busiest<T: Ord>(values: impl Iterator<Item = T>) -> T {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for value in values {
        *counts.entry(value).or_default() += 1;
    }
    let most = counts.values().copied().max().expect("some values");
    counts
        .into_iter()
        .find(|(_, count)| *count == most)
        .map(|(value, _)| value)
        .expect("the most frequent")
}

fn newest_casts<'a>(rows: impl Iterator<Item = &'a CastRow>) -> Vec<Cast> {
    let mut casts: Vec<Cast> = rows.map(cast_of).collect();
    casts.sort_by(|a, b| (b.timestamp, &b.hash).cmp(&(a.timestamp, &a.hash)));
    casts
}

fn newest_reactions<'a>(rows: impl Iterator<Item = &'a ReactionRow>) -> Vec<Reaction> {
    let mut reactions: Vec<Reaction> = rows.map(reaction_of).collect();
    reactions.sort_by(|a, b| (b.timestamp, &b.hash).cmp(&(a.timestamp, &a.hash)));
    reactions
}

fn newest_links<'a>(rows: impl Iterator<Item = &'a LinkRow>) -> Vec<Link> {
    let mut links: Vec<Link> = rows.map(link_of).collect();
    links.sort_by(|a, b| (b.timestamp, &b.hash).cmp(&(a.timestamp, &a.hash)));
    links
}

/// The item a dump row stands for.
fn cast_of(row: &CastRow) -> Cast {
    let parent = match (row.parent_fid, &row.parent_hash, &row.parent_url) {
        (Some(fid), Some(hash), _) => Some(CastTarget::Cast {
            fid,
            hash: hash.clone(),
        }),
        (_, _, Some(url)) => Some(CastTarget::Url { url: url.clone() }),
        _ => None,
    };
    Cast {
        hash: row.hash.clone(),
        fid: row.fid,
        timestamp: row.timestamp,
        text: row.text.clone(),
        parent,
        embeds: row
            .embeds
            .iter()
            .map(|embed| match embed {
                EmbedRow::Url(url) => Embed::Url { url: url.clone() },
                EmbedRow::Cast { fid, hash } => Embed::Cast {
                    fid: *fid,
                    hash: hash.clone(),
                },
            })
            .collect(),
        mentions: row.mentions.clone(),
        mentions_positions: row.mentions_positions.clone(),
    }
}

fn reaction_of(row: &ReactionRow) -> Reaction {
    let target = match (row.target_cast_fid, &row.target_cast_hash, &row.target_url) {
        (Some(fid), Some(hash), _) => CastTarget::Cast {
            fid,
            hash: hash.clone(),
        },
        (_, _, url) => CastTarget::Url {
            url: url.clone().unwrap_or_default(),
        },
    };
    Reaction {
        hash: row.hash.clone(),
        fid: row.fid,
        timestamp: row.timestamp,
        reaction_type: ReactionType::from_id(row.reaction_type).expect("a reaction type"),
        target,
    }
}

fn link_of(row: &LinkRow) -> Link {
    Link {
        hash: row.hash.clone(),
        fid: row.fid,
        timestamp: row.timestamp,
        link_type: row.link_type.clone(),
        target_fid: row.target_fid,
        display_timestamp: row.display_timestamp,
    }
}
