//! The hub side of the query layer against the dev hub: every `HubReader` query answers what
//! the hub holds (the live rows of `devhub --dump-state`), newest first, in pages that walk
//! every item exactly once; not found is `None` or an empty page; cursors it cannot continue
//! are refused, never a panic. And the same queries answered by the hub and by a database
//! filled through the streaming path give identical answers.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use common::harness::{self, devhub, small_hub, wait_converged};
use common::{TestDb, TestRedis};
use waypoint::cli::Role;
use waypoint::hub::ids::FARCASTER_EPOCH_UNIX_SECONDS;
use waypoint::query::cursor::{Cursor, Position};
use waypoint::query::db::DbReader;
use waypoint::query::hub::HubReader;
use waypoint::query::{
    Cast, CastTarget, Embed, Page, PageRequest, ReactionType, SourceError, TimeWindow,
    verification_address,
};
use waypoint::replica::{self, EmbedRow, ReplicaState};
use waypoint::service::Service;

const CONVERGE: Duration = Duration::from_secs(90);
/// Page sizes the walks use: one item a page, a few, and everything at once.
const LIMITS: [u32; 3] = [1, 3, 1000];

/// Reads every page of a list with `limit`, checking each page's size; the items in order.
async fn walk<T, F, Fut>(limit: u32, mut read: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>, SourceError>>,
{
    let mut items = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = read(PageRequest { limit, cursor }).await.expect("a page");
        assert!(
            page.items.len() <= limit as usize,
            "a page holds at most limit items"
        );
        items.extend(page.items);
        match page.next_cursor {
            Some(text) => cursor = Some(Cursor::decode("cursor", &text).expect("our cursor")),
            None => return items,
        }
    }
    panic!("the walk does not end");
}

/// Newest first by (timestamp, hash), as every message list is ordered.
fn newest_first<T>(mut rows: Vec<T>, key: impl Fn(&T) -> (u64, String)) -> Vec<T> {
    rows.sort_by_key(|row| std::cmp::Reverse(key(row)));
    rows
}

fn cast_of(row: &replica::CastRow) -> Cast {
    let parent = match (&row.parent_fid, &row.parent_hash, &row.parent_url) {
        (Some(fid), Some(hash), _) => Some(CastTarget::Cast {
            fid: *fid,
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

fn casts_where(state: &ReplicaState, keep: impl Fn(&replica::CastRow) -> bool) -> Vec<Cast> {
    newest_first(
        state
            .casts
            .iter()
            .filter(|row| keep(row))
            .map(cast_of)
            .collect(),
        |cast| (cast.timestamp, cast.hash.clone()),
    )
}

/// (hash, fid, timestamp, type, target) of a reaction.
type ReactionKey = (String, u64, u64, i32, CastTarget);

fn reactions_where(
    state: &ReplicaState,
    keep: impl Fn(&replica::ReactionRow) -> bool,
) -> Vec<ReactionKey> {
    let rows = state
        .reactions
        .iter()
        .filter(|row| keep(row))
        .map(|row| {
            let target = match (&row.target_cast_fid, &row.target_cast_hash, &row.target_url) {
                (Some(fid), Some(hash), _) => CastTarget::Cast {
                    fid: *fid,
                    hash: hash.clone(),
                },
                (_, _, url) => CastTarget::Url {
                    url: url.clone().unwrap_or_default(),
                },
            };
            (
                row.hash.clone(),
                row.fid,
                row.timestamp,
                row.reaction_type,
                target,
            )
        })
        .collect();
    newest_first(rows, |row| (row.2, row.0.clone()))
}

/// (hash, fid, timestamp, type, target, display timestamp) of a link.
type LinkKey = (String, u64, u64, String, u64, Option<u64>);

fn links_where(state: &ReplicaState, keep: impl Fn(&replica::LinkRow) -> bool) -> Vec<LinkKey> {
    let rows = state
        .links
        .iter()
        .filter(|row| keep(row))
        .map(|row| {
            (
                row.hash.clone(),
                row.fid,
                row.timestamp,
                row.link_type.clone(),
                row.target_fid,
                row.display_timestamp,
            )
        })
        .collect();
    newest_first(rows, |row| (row.2, row.0.clone()))
}

/// (hash, fid, timestamp, address as text, protocol name) of a verification.
type VerificationKey = (String, u64, u64, String, String);

fn verifications_where(
    state: &ReplicaState,
    keep: impl Fn(&replica::VerificationRow) -> bool,
) -> Vec<VerificationKey> {
    let rows = state
        .verifications
        .iter()
        .filter(|row| keep(row))
        .map(|row| {
            let bytes = hex::decode(&row.address).expect("hex address");
            let protocol = if row.protocol == 1 {
                "solana"
            } else {
                "ethereum"
            };
            (
                row.hash.clone(),
                row.fid,
                row.timestamp,
                verification_address(row.protocol, &bytes),
                protocol.to_owned(),
            )
        })
        .collect();
    newest_first(rows, |row| (row.2, row.0.clone()))
}

fn reaction_key(reaction: waypoint::query::Reaction) -> ReactionKey {
    (
        reaction.hash,
        reaction.fid,
        reaction.timestamp,
        reaction.reaction_type.id(),
        reaction.target,
    )
}

fn link_key(link: waypoint::query::Link) -> LinkKey {
    (
        link.hash,
        link.fid,
        link.timestamp,
        link.link_type,
        link.target_fid,
        link.display_timestamp,
    )
}

fn verification_key(verification: waypoint::query::Verification) -> VerificationKey {
    (
        verification.hash,
        verification.fid,
        verification.timestamp,
        verification.address,
        verification.protocol,
    )
}

/// A window over the middle of a fid's casts, as Unix seconds.
fn middle_window(casts: &[Cast]) -> Option<(TimeWindow, u64, u64)> {
    let mut times: Vec<u64> = casts.iter().map(|cast| cast.timestamp).collect();
    times.sort_unstable();
    if times.len() < 3 {
        return None;
    }
    let (start, end) = (times[times.len() / 3], times[2 * times.len() / 3]);
    Some((
        TimeWindow {
            start: Some(start + FARCASTER_EPOCH_UNIX_SECONDS),
            end: Some(end + FARCASTER_EPOCH_UNIX_SECONDS),
        },
        start,
        end,
    ))
}

fn reader_for(hub_url: &str) -> HubReader {
    let (db, redis) = (TestDb::reserve(), TestRedis::new());
    let config = harness::config(&harness::env(&db, &redis, hub_url, &[]));
    HubReader::new(&config.hub, &config.query).expect("a hub reader")
}

/// Every list of `fid` that the dump answers, walked with every page size.
async fn check_fid_lists(reader: &HubReader, state: &ReplicaState, fid: u64, limits: &[u32]) {
    let casts = casts_where(state, |row| row.fid == fid);
    for &limit in limits {
        let got = walk(limit, |page| reader.casts_by_fid(fid, page)).await;
        assert_eq!(got, casts, "casts_by_fid({fid}) limit {limit}");

        let got = walk(limit, |page| reader.casts_by_mention(fid, page)).await;
        let expected = casts_where(state, |row| row.mentions.contains(&fid));
        assert_eq!(got, expected, "casts_by_mention({fid}) limit {limit}");

        let got: Vec<_> = walk(limit, |page| reader.reactions_by_fid(fid, None, page))
            .await
            .into_iter()
            .map(reaction_key)
            .collect();
        assert_eq!(
            got,
            reactions_where(state, |row| row.fid == fid),
            "reactions_by_fid({fid}) limit {limit}"
        );
        let got: Vec<_> = walk(limit, |page| {
            reader.reactions_by_fid(fid, Some(ReactionType::Recast), page)
        })
        .await
        .into_iter()
        .map(reaction_key)
        .collect();
        assert_eq!(
            got,
            reactions_where(state, |row| row.fid == fid && row.reaction_type == 2),
            "recasts of {fid} limit {limit}"
        );

        let got: Vec<_> = walk(limit, |page| reader.links_by_fid(fid, None, page))
            .await
            .into_iter()
            .map(link_key)
            .collect();
        assert_eq!(
            got,
            links_where(state, |row| row.fid == fid),
            "links_by_fid({fid}) limit {limit}"
        );
        let follow = Some("follow".to_owned());
        let got: Vec<_> = walk(limit, |page| {
            reader.links_by_target(fid, follow.clone(), page)
        })
        .await
        .into_iter()
        .map(link_key)
        .collect();
        assert_eq!(
            got,
            links_where(state, |row| row.target_fid == fid
                && row.link_type == "follow"),
            "followers of {fid} limit {limit}"
        );
        let got: Vec<_> = walk(limit, |page| reader.links_by_target(fid, None, page))
            .await
            .into_iter()
            .map(link_key)
            .collect();
        assert_eq!(
            got,
            links_where(state, |row| row.target_fid == fid),
            "links_by_target({fid}) limit {limit}"
        );

        let got: Vec<_> = walk(limit, |page| reader.verifications_by_fid(fid, page))
            .await
            .into_iter()
            .map(verification_key)
            .collect();
        assert_eq!(
            got,
            verifications_where(state, |row| row.fid == fid),
            "verifications_by_fid({fid}) limit {limit}"
        );

        // Time windows: GetAll* lists hold removes too; only adds come back.
        let everything = TimeWindow::default();
        let got = walk(limit, |page| {
            reader.casts_by_fid_in_window(fid, everything, page)
        })
        .await;
        assert_eq!(got, casts, "casts_by_fid_in_window({fid}) limit {limit}");
        if let Some((window, start, end)) = middle_window(&casts) {
            let got = walk(limit, |page| {
                reader.casts_by_fid_in_window(fid, window, page)
            })
            .await;
            let expected = casts_where(state, |row| {
                row.fid == fid && row.timestamp >= start && row.timestamp <= end
            });
            assert!(!expected.is_empty());
            assert_eq!(got, expected, "casts of {fid} in {window:?} limit {limit}");
            let got: Vec<_> = walk(limit, |page| {
                reader.reactions_by_fid_in_window(fid, window, page)
            })
            .await
            .into_iter()
            .map(reaction_key)
            .collect();
            let expected = reactions_where(state, |row| {
                row.fid == fid && row.timestamp >= start && row.timestamp <= end
            });
            assert_eq!(got, expected, "reactions of {fid} in {window:?}");
            let got: Vec<_> = walk(limit, |page| {
                reader.links_by_fid_in_window(fid, window, page)
            })
            .await
            .into_iter()
            .map(link_key)
            .collect();
            let expected = links_where(state, |row| {
                row.fid == fid && row.timestamp >= start && row.timestamp <= end
            });
            assert_eq!(got, expected, "links of {fid} in {window:?}");
        }
        let got: Vec<_> = walk(limit, |page| {
            reader.verifications_by_fid_in_window(fid, everything, page)
        })
        .await
        .into_iter()
        .map(verification_key)
        .collect();
        assert_eq!(
            got,
            verifications_where(state, |row| row.fid == fid),
            "verifications of {fid} in every time"
        );

        // On-chain events: newest first by (block number, log index).
        let mut expected: Vec<_> = state
            .onchain_events
            .iter()
            .filter(|row| row.fid == fid)
            .map(|row| {
                (
                    row.block_number,
                    row.log_index,
                    row.event_type,
                    row.tx_hash.clone(),
                    row.block_timestamp,
                )
            })
            .collect();
        expected.sort_by_key(|row| std::cmp::Reverse((row.0, row.1)));
        assert!(!expected.is_empty(), "every fid has on-chain events");
        let got: Vec<_> = walk(limit, |page| reader.onchain_events(fid, None, page))
            .await
            .into_iter()
            .map(|event| {
                (
                    event.block_number,
                    event.log_index,
                    event.event_type,
                    event.transaction_hash,
                    event.block_timestamp,
                )
            })
            .collect();
        assert_eq!(got, expected, "onchain_events({fid}) limit {limit}");
        let got = walk(limit, |page| reader.onchain_events(fid, Some(3), page)).await;
        assert!(
            !got.is_empty()
                && got
                    .iter()
                    .all(|event| event.event_type == 3 && event.event_type_name == "id_register"),
            "ID_REGISTER events of {fid}"
        );
    }
}

#[tokio::test]
async fn every_hub_query_answers_what_the_hub_holds() {
    let hub = devhub(small_hub(41)).await;
    let state = hub.dump_state().live_only();
    let reader = reader_for(&hub.url());

    let fids: Vec<u64> = (1..=40).collect();
    for &fid in &fids {
        // One item a page for a few fids (every page boundary), larger pages for all.
        let limits: &[u32] = if fid <= 4 { &LIMITS } else { &LIMITS[1..] };
        check_fid_lists(&reader, &state, fid, limits).await;
    }

    // Replies, by parent cast and by parent URL; reactions by target cast and URL.
    let parents: BTreeSet<(u64, String)> = state
        .casts
        .iter()
        .filter_map(|row| Some((row.parent_fid?, row.parent_hash.clone()?)))
        .collect();
    let urls: BTreeSet<String> = state
        .casts
        .iter()
        .filter_map(|row| row.parent_url.clone())
        .collect();
    assert!(!parents.is_empty() && !urls.is_empty());
    for (fid, hash) in parents.iter().take(25) {
        let bytes = hex::decode(hash).unwrap();
        let expected = casts_where(&state, |row| {
            row.parent_fid == Some(*fid) && row.parent_hash.as_ref() == Some(hash)
        });
        for limit in LIMITS {
            let got = walk(limit, |page| {
                reader.casts_by_parent(*fid, bytes.clone(), page)
            })
            .await;
            assert_eq!(got, expected, "replies to {fid}/{hash} limit {limit}");
        }
    }
    for url in &urls {
        let expected = casts_where(&state, |row| row.parent_url.as_ref() == Some(url));
        for limit in LIMITS {
            let got = walk(limit, |page| reader.casts_by_parent_url(url.clone(), page)).await;
            assert_eq!(got, expected, "replies to {url} limit {limit}");
        }
    }
    // Distinct targets, in a stable order.
    let mut targets: Vec<CastTarget> = Vec::new();
    for row in reactions_where(&state, |_| true) {
        if !targets.contains(&row.4) {
            targets.push(row.4);
        }
    }
    let mut checked = 0;
    for target in targets.iter().take(40) {
        let expected = reactions_where(&state, |row| match target {
            CastTarget::Cast { fid, hash } => {
                row.target_cast_fid == Some(*fid) && row.target_cast_hash.as_ref() == Some(hash)
            }
            CastTarget::Url { url } => row.target_url.as_ref() == Some(url),
        });
        for limit in LIMITS {
            let got: Vec<_> = walk(limit, |page| {
                reader.reactions_by_target(target.clone(), None, page)
            })
            .await
            .into_iter()
            .map(reaction_key)
            .collect();
            assert_eq!(got, expected, "reactions to {target:?} limit {limit}");
        }
        let likes: Vec<_> = expected.iter().filter(|row| row.3 == 1).cloned().collect();
        let got: Vec<_> = walk(2, |page| {
            reader.reactions_by_target(target.clone(), Some(ReactionType::Like), page)
        })
        .await
        .into_iter()
        .map(reaction_key)
        .collect();
        assert_eq!(got, likes, "likes of {target:?}");
        checked += 1;
    }
    assert!(checked > 10);

    // Point lookups find every live item.
    for cast in casts_where(&state, |_| true).iter().take(60) {
        let found = reader
            .cast(cast.fid, hex::decode(&cast.hash).unwrap())
            .await
            .unwrap();
        assert_eq!(found.as_ref(), Some(cast));
    }
    for row in reactions_where(&state, |_| true).iter().take(60) {
        let reaction_type = ReactionType::from_id(row.3).unwrap();
        let found = reader
            .reaction(row.1, reaction_type, row.4.clone())
            .await
            .unwrap();
        assert_eq!(found.map(reaction_key).as_ref(), Some(row));
    }
    for row in links_where(&state, |_| true).iter().take(60) {
        let found = reader.link(row.1, row.3.clone(), row.4).await.unwrap();
        assert_eq!(found.map(link_key).as_ref(), Some(row));
    }
    let verifications = verifications_where(&state, |_| true);
    assert!(verifications.iter().any(|row| row.4 == "solana"));
    assert!(verifications.iter().any(|row| row.4 == "ethereum"));
    for row in &verifications {
        let found = reader.verification(row.1, row.3.clone()).await.unwrap();
        assert_eq!(found.map(verification_key).as_ref(), Some(row));
    }

    // Profiles and username proofs.
    for &fid in &fids {
        let user_data: Vec<_> = state
            .user_data
            .iter()
            .filter(|row| row.fid == fid)
            .map(|row| (row.user_data_type, row.value.clone(), row.hash.clone()))
            .collect();
        let proofs: Vec<_> = state
            .username_proofs
            .iter()
            .filter(|row| row.fid == fid)
            .map(|row| {
                (
                    row.name.clone(),
                    row.timestamp,
                    format!("0x{}", row.owner),
                    row.proof_type,
                )
            })
            .collect();
        let profile = reader.profile(fid).await.unwrap().expect("a profile");
        let got: Vec<_> = profile
            .user_data
            .iter()
            .map(|value| (value.data_type, value.value.clone(), value.hash.clone()))
            .collect();
        assert_eq!(got, user_data, "user data of {fid}");
        let username = user_data
            .iter()
            .find(|(data_type, _, _)| *data_type == 6)
            .map(|(_, value, _)| value.clone());
        assert_eq!(profile.username, username);
        assert_eq!(
            profile.follower_count, None,
            "counts come from the database"
        );
        let got: Vec<_> = reader
            .username_proofs_by_fid(fid)
            .await
            .unwrap()
            .into_iter()
            .map(|proof| {
                assert_eq!(proof.proof_type, "fname");
                (proof.name, proof.timestamp, proof.owner, 1)
            })
            .collect();
        assert_eq!(got, proofs, "username proofs of {fid}");
        assert_eq!(
            profile
                .username_proofs
                .iter()
                .map(|proof| proof.name.clone())
                .collect::<Vec<_>>(),
            proofs
                .iter()
                .map(|proof| proof.0.clone())
                .collect::<Vec<_>>()
        );
        for (name, ..) in &proofs {
            assert_eq!(
                reader.fid_by_username(name.clone()).await.unwrap(),
                Some(fid)
            );
            let proof = reader.username_proof(name.to_uppercase()).await.unwrap();
            assert_eq!(proof.map(|proof| proof.fid), Some(fid), "{name}");
        }
        reader
            .link_compact_state(fid)
            .await
            .expect("compact states");
    }

    // Not found: None or an empty page, never an error.
    let nobody = 4_000_000;
    assert_eq!(reader.profile(nobody).await.unwrap(), None);
    assert_eq!(reader.cast(1, vec![0xab; 20]).await.unwrap(), None);
    assert_eq!(reader.cast(1, b"not a hash".to_vec()).await.unwrap(), None);
    assert_eq!(
        reader
            .fid_by_username("nobody-has-this".into())
            .await
            .unwrap(),
        None
    );
    assert_eq!(reader.username_proof("x.eth".into()).await.unwrap(), None);
    let target = CastTarget::Cast {
        fid: 1,
        hash: "ab".repeat(20),
    };
    assert_eq!(
        reader
            .reaction(1, ReactionType::Like, target.clone())
            .await
            .unwrap(),
        None
    );
    let not_hex = CastTarget::Cast {
        fid: 1,
        hash: "zz".into(),
    };
    assert_eq!(
        reader
            .reaction(1, ReactionType::Like, not_hex.clone())
            .await
            .unwrap(),
        None
    );
    assert!(
        walk(10, |page| reader.reactions_by_target(
            not_hex.clone(),
            None,
            page
        ))
        .await
        .is_empty()
    );
    assert_eq!(reader.link(1, "follow".into(), nobody).await.unwrap(), None);
    for address in [
        "0x0000000000000000000000000000000000000000",
        "not-an-address",
        "",
    ] {
        assert_eq!(
            reader.verification(1, address.into()).await.unwrap(),
            None,
            "{address}"
        );
    }
    assert!(
        walk(10, |page| reader.casts_by_fid(nobody, page))
            .await
            .is_empty()
    );
    assert!(
        walk(10, |page| reader.casts_by_mention(nobody, page))
            .await
            .is_empty()
    );
    assert!(
        walk(10, |page| reader.links_by_target(nobody, None, page))
            .await
            .is_empty()
    );
    assert!(
        walk(10, |page| reader.onchain_events(nobody, None, page))
            .await
            .is_empty()
    );
    assert!(
        walk(10, |page| reader.onchain_events(1, Some(99), page))
            .await
            .is_empty()
    );
    let before_epoch = TimeWindow {
        start: None,
        end: Some(FARCASTER_EPOCH_UNIX_SECONDS - 1),
    };
    assert!(
        walk(10, |page| reader.casts_by_fid_in_window(
            1,
            before_epoch,
            page
        ))
        .await
        .is_empty()
    );
    assert!(
        reader
            .username_proofs_by_fid(nobody)
            .await
            .unwrap()
            .is_empty()
    );

    // A database cursor continues on the database; a cursor the hub cannot read is an
    // error, not a panic.
    let database_cursor = Cursor {
        hub_token: None,
        after: Some(Position {
            timestamp: 1,
            key: "ab".repeat(20),
        }),
    };
    let page = |cursor: &Cursor| PageRequest {
        limit: 5,
        cursor: Some(cursor.clone()),
    };
    assert!(matches!(
        reader.casts_by_fid(1, page(&database_cursor)).await,
        Err(SourceError::CursorElsewhere)
    ));
    assert!(matches!(
        reader.casts_by_mention(1, page(&database_cursor)).await,
        Err(SourceError::CursorElsewhere)
    ));
    assert!(matches!(
        reader.onchain_events(1, None, page(&database_cursor)).await,
        Err(SourceError::CursorElsewhere)
    ));
    let garbage = Cursor {
        hub_token: Some("00ff".into()),
        after: None,
    };
    assert!(reader.casts_by_fid(1, page(&garbage)).await.is_err());
    assert!(reader.casts_by_mention(1, page(&garbage)).await.is_err());
    assert!(
        reader
            .links_by_target(1, None, page(&garbage))
            .await
            .is_err()
    );
    let bad_position = Cursor {
        hub_token: Some(String::new()),
        after: Some(Position {
            timestamp: 1,
            key: "not a position".into(),
        }),
    };
    assert!(
        reader
            .onchain_events(1, None, page(&bad_position))
            .await
            .is_err()
    );

    hub.shutdown().await;
}

/// Runs the same query on both readers and checks they agree, for every page size; then
/// begins the walk on the hub and finishes it on the database (the hub failing mid-walk).
macro_rules! same_answer {
    ($hub:expr, $db:expr, $what:expr, |$reader:ident, $page:ident| $call:expr) => {{
        let hub_reader = &$hub;
        let db_reader = &$db;
        let full = {
            let $reader = hub_reader;
            walk(1000, |$page| $call).await
        };
        for limit in [2u32, 1000] {
            let from_hub = {
                let $reader = hub_reader;
                walk(limit, |$page| $call).await
            };
            let from_db = {
                let $reader = db_reader;
                walk(limit, |$page| $call).await
            };
            assert_eq!(
                from_hub, from_db,
                "{} limit {limit}: hub and database differ",
                $what
            );
            assert_eq!(from_hub, full, "{} limit {limit}", $what);
        }
        // Hub first, then the database continues from the hub's cursor.
        let first = {
            let $reader = hub_reader;
            let $page = PageRequest {
                limit: 2,
                cursor: None,
            };
            $call.await.expect("first page")
        };
        let mut items = first.items;
        if let Some(text) = first.next_cursor {
            let cursor = Cursor::decode("cursor", &text).expect("our cursor");
            let mut cursor = Some(Cursor {
                hub_token: None,
                ..cursor
            });
            while let Some(next) = cursor.take() {
                let $reader = db_reader;
                let $page = PageRequest {
                    limit: 3,
                    cursor: Some(next),
                };
                let page = $call.await.expect("database page");
                items.extend(page.items);
                cursor = page
                    .next_cursor
                    .map(|text| Cursor::decode("cursor", &text).expect("cursor"));
            }
        }
        assert_eq!(
            items, full,
            "{}: the database continues the hub's walk",
            $what
        );
        full.len()
    }};
}

#[tokio::test]
async fn the_hub_and_the_database_give_the_same_answers() {
    let hub = devhub(small_hub(43)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let config = harness::config(&env);
    let service = Service::start(Role::Both, config.clone(), None)
        .await
        .unwrap();
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    service.shutdown().await.unwrap();

    let hub_reader = HubReader::new(&config.hub, &config.query).unwrap();
    let db_reader = DbReader { pg: pg.clone() };
    let state = hub.dump_state().live_only();
    let mut num_items = 0;
    for fid in 1..=40u64 {
        let window = casts_where(&state, |row| row.fid == fid);
        let window = middle_window(&window)
            .map(|(window, ..)| window)
            .unwrap_or_default();
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("casts_by_fid({fid})"),
            |reader, page| reader.casts_by_fid(fid, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("casts_by_mention({fid})"),
            |reader, page| reader.casts_by_mention(fid, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("casts_by_fid_in_window({fid})"),
            |reader, page| reader.casts_by_fid_in_window(fid, window, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("reactions_by_fid({fid})"),
            |reader, page| reader.reactions_by_fid(fid, None, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("likes_by_fid({fid})"),
            |reader, page| reader.reactions_by_fid(fid, Some(ReactionType::Like), page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("reactions_by_fid_in_window({fid})"),
            |reader, page| reader.reactions_by_fid_in_window(fid, window, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("links_by_fid({fid})"),
            |reader, page| reader.links_by_fid(fid, None, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("follows_by_fid({fid})"),
            |reader, page| reader.links_by_fid(fid, Some("follow".into()), page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("links_by_target({fid})"),
            |reader, page| reader.links_by_target(fid, None, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("followers({fid})"),
            |reader, page| reader.links_by_target(fid, Some("follow".into()), page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("links_by_fid_in_window({fid})"),
            |reader, page| reader.links_by_fid_in_window(fid, window, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("verifications_by_fid({fid})"),
            |reader, page| reader.verifications_by_fid(fid, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("verifications_by_fid_in_window({fid})"),
            |reader, page| reader.verifications_by_fid_in_window(fid, TimeWindow::default(), page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("onchain_events({fid})"),
            |reader, page| reader.onchain_events(fid, None, page)
        );
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("signers({fid})"),
            |reader, page| reader.onchain_events(fid, Some(1), page)
        );

        let mut from_hub = hub_reader.profile(fid).await.unwrap();
        let from_db = db_reader.profile(fid).await.unwrap();
        // The follow counts are the database's alone (the query layer adds them).
        if let (Some(profile), Some(db_profile)) = (from_hub.as_mut(), from_db.as_ref()) {
            profile.follower_count = db_profile.follower_count;
            profile.following_count = db_profile.following_count;
        }
        assert_eq!(from_hub, from_db, "profile({fid})");
        let proofs = hub_reader.username_proofs_by_fid(fid).await.unwrap();
        assert_eq!(proofs, db_reader.username_proofs_by_fid(fid).await.unwrap());
        for proof in &proofs {
            assert_eq!(
                hub_reader.username_proof(proof.name.clone()).await.unwrap(),
                db_reader.username_proof(proof.name.clone()).await.unwrap()
            );
            assert_eq!(
                hub_reader
                    .fid_by_username(proof.name.clone())
                    .await
                    .unwrap(),
                db_reader.fid_by_username(proof.name.clone()).await.unwrap()
            );
        }
        assert_eq!(
            hub_reader.link_compact_state(fid).await.unwrap(),
            db_reader.link_compact_state(fid).await.unwrap(),
            "link_compact_state({fid})"
        );
        for verification in walk(1000, |page| hub_reader.verifications_by_fid(fid, page)).await {
            let address = verification.address.clone();
            assert_eq!(
                db_reader.verification(fid, address.clone()).await.unwrap(),
                Some(verification.clone())
            );
            assert_eq!(
                hub_reader.verification(fid, address).await.unwrap(),
                Some(verification)
            );
        }
    }

    // Lists by target, and point lookups of each item.
    let all_casts = casts_where(&state, |_| true);
    let mut parents = BTreeSet::new();
    let mut urls = BTreeSet::new();
    for cast in &all_casts {
        match &cast.parent {
            Some(CastTarget::Cast { fid, hash }) => {
                parents.insert((*fid, hash.clone()));
            }
            Some(CastTarget::Url { url }) => {
                urls.insert(url.clone());
            }
            None => {}
        }
    }
    for (fid, hash) in parents.iter().take(30) {
        let bytes = hex::decode(hash).unwrap();
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("replies to {fid}/{hash}"),
            |reader, page| reader.casts_by_parent(*fid, bytes.clone(), page)
        );
        let target = CastTarget::Cast {
            fid: *fid,
            hash: hash.clone(),
        };
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("reactions to {fid}/{hash}"),
            |reader, page| reader.reactions_by_target(target.clone(), None, page)
        );
    }
    for url in &urls {
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("replies to {url}"),
            |reader, page| reader.casts_by_parent_url(url.clone(), page)
        );
        let target = CastTarget::Url { url: url.clone() };
        num_items += same_answer!(
            hub_reader,
            db_reader,
            format!("reactions to {url}"),
            |reader, page| reader.reactions_by_target(
                target.clone(),
                Some(ReactionType::Like),
                page
            )
        );
    }
    for cast in all_casts.iter().take(80) {
        let hash = hex::decode(&cast.hash).unwrap();
        let from_hub = hub_reader.cast(cast.fid, hash.clone()).await.unwrap();
        assert_eq!(from_hub, db_reader.cast(cast.fid, hash).await.unwrap());
        assert_eq!(from_hub.as_ref(), Some(cast));
    }
    for reaction in walk(1000, |page| hub_reader.reactions_by_fid(3, None, page)).await {
        let (fid, kind, target) = (
            reaction.fid,
            reaction.reaction_type,
            reaction.target.clone(),
        );
        assert_eq!(
            db_reader.reaction(fid, kind, target.clone()).await.unwrap(),
            Some(reaction.clone())
        );
        assert_eq!(
            hub_reader.reaction(fid, kind, target).await.unwrap(),
            Some(reaction)
        );
    }
    for link in walk(1000, |page| hub_reader.links_by_fid(5, None, page)).await {
        let (fid, kind, target) = (link.fid, link.link_type.clone(), link.target_fid);
        assert_eq!(
            db_reader.link(fid, kind.clone(), target).await.unwrap(),
            Some(link.clone())
        );
        assert_eq!(
            hub_reader.link(fid, kind, target).await.unwrap(),
            Some(link)
        );
    }
    assert!(num_items > 1000, "the comparison covered {num_items} items");

    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}
