//! The PostgreSQL side of the query layer: every query over the replica's live rows
//! (`deleted_at IS NULL`: a removed, superseded, pruned or revoked message is absent), in the
//! item shapes of `model`, decoded by the same rules as `store::state` reads the replica back.
//!
//! Lists are newest first by (`timestamp` DESC, `hash` DESC) — the hub's `reverse=true` order
//! — and paginated by keyset: a page holds the rows strictly after the cursor's position
//! (Farcaster seconds and the hash of the last item), so a list the hub began can continue
//! here, and walking the pages yields every row exactly once while rows keep arriving. Each
//! list reads one range of a partial index over the live rows in that order
//! (`migrations/V3__query_indexes.sql`). One page reads `limit + 1` rows to know whether
//! another page follows.
//!
//! Two lists have their own positions:
//! - on-chain events are newest first by (`block_number` DESC, `log_index` DESC); the position
//!   key is `block_number:log_index` and its timestamp the block's Unix time (informative only).
//! - text search is best match first by (`ts_rank` DESC, `timestamp` DESC, `hash` DESC); the
//!   position key is `rank:hash` (the rank as `f32`, printed so it reads back exactly) and its
//!   timestamp the cast's Farcaster time.
//!
//! A cursor that holds only a hub page token cannot be continued here
//! ([`SourceError::CursorElsewhere`]); nor can one whose position this list cannot read.
//! Anything not found is `Ok(None)` or an empty page, never an error.

use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::SourceError;
use super::cursor::{Cursor, Position};
use super::model::*;
use crate::hub::ids::FARCASTER_EPOCH_UNIX_SECONDS;
use crate::replica::{EmbedRow, sanitize_text};
use crate::store::StoreError;
use crate::store::rows::{link_key, reaction_key};
use crate::store::state::{embeds_from_json, numbers};

/// Reads the replica in PostgreSQL.
#[derive(Clone)]
pub struct DbReader {
    pub pg: crate::store::Pg,
}

const EPOCH: i64 = FARCASTER_EPOCH_UNIX_SECONDS as i64;
/// Latest instant a position or window may name: the end of year 9999, the last `time` can
/// hold (PostgreSQL holds more; no message is that late).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// The columns [`cast_of`] reads, from a relation aliased `c` with the casts' column names.
macro_rules! cast_columns {
    () => {
        "c.hash, c.fid, extract(epoch FROM c.\"timestamp\")::int8, c.text, c.parent_fid, \
         c.parent_hash, c.parent_url, c.embeds, c.mentions, c.mentions_positions"
    };
}

/// The columns [`reaction_of`] reads, from `reactions r`.
macro_rules! reaction_columns {
    () => {
        "r.hash, r.fid, extract(epoch FROM r.\"timestamp\")::int8, r.type, r.target_cast_fid, \
         r.target_cast_hash, r.target_url"
    };
}

/// The columns [`link_of`] reads, from `links l`.
macro_rules! link_columns {
    () => {
        "l.hash, l.fid, extract(epoch FROM l.\"timestamp\")::int8, l.type, l.target_fid, \
         extract(epoch FROM l.display_timestamp)::int8"
    };
}

/// The columns [`verification_of`] reads, from `verifications v`.
macro_rules! verification_columns {
    () => {
        "v.hash, v.fid, extract(epoch FROM v.\"timestamp\")::int8, v.signer_address, v.protocol, \
         v.block_hash, v.verification_type, v.chain_id"
    };
}

/// The columns [`proof_of`] reads, from `username_proofs p`.
macro_rules! proof_columns {
    () => {
        "p.username, p.fid, extract(epoch FROM p.\"timestamp\")::int8, p.type, p.owner, p.signature"
    };
}

/// Keyset condition and order of a message list over alias `$alias`; parameters `$time` and
/// `$hash` are the position, `$limit` the rows read.
macro_rules! newest_first {
    ($alias:literal, $time:literal, $hash:literal, $limit:literal) => {
        concat!(
            " AND (",
            $alias,
            ".\"timestamp\", ",
            $alias,
            ".hash) < ($",
            $time,
            ", $",
            $hash,
            ")",
            " ORDER BY ",
            $alias,
            ".\"timestamp\" DESC, ",
            $alias,
            ".hash DESC LIMIT $",
            $limit
        )
    };
}

const CAST_SQL: &str = concat!(
    "SELECT ",
    cast_columns!(),
    " FROM casts c WHERE c.hash = $1 AND c.fid = $2 AND c.deleted_at IS NULL"
);
const CASTS_BY_FID_SQL: &str = concat!(
    "SELECT ",
    cast_columns!(),
    " FROM casts c WHERE c.fid = $1 AND c.deleted_at IS NULL",
    " AND c.\"timestamp\" >= $5 AND c.\"timestamp\" <= $6",
    newest_first!("c", 2, 3, 4)
);
const CASTS_BY_MENTION_SQL: &str = concat!(
    "SELECT ",
    cast_columns!(),
    " FROM casts c WHERE c.mentions @> $1 AND c.deleted_at IS NULL",
    newest_first!("c", 2, 3, 4)
);
const CASTS_BY_PARENT_SQL: &str = concat!(
    "SELECT ",
    cast_columns!(),
    " FROM casts c WHERE c.parent_hash = $1 AND c.parent_fid = $5 AND c.deleted_at IS NULL",
    newest_first!("c", 2, 3, 4)
);
const CASTS_BY_PARENT_URL_SQL: &str = concat!(
    "SELECT ",
    cast_columns!(),
    " FROM casts c WHERE c.parent_url = $1 AND c.deleted_at IS NULL",
    newest_first!("c", 2, 3, 4)
);
/// Per followed account its newest `limit` casts after the position (one index range each),
/// then the newest `limit` of those: the feed never reads an account's whole history.
const FOLLOWING_FEED_SQL: &str = concat!(
    "SELECT ",
    cast_columns!(),
    " FROM links l CROSS JOIN LATERAL (",
    "SELECT c.hash, c.fid, c.\"timestamp\", c.text, c.parent_fid, c.parent_hash, c.parent_url,",
    " c.embeds, c.mentions, c.mentions_positions FROM casts c",
    " WHERE c.fid = l.target_fid AND c.deleted_at IS NULL",
    newest_first!("c", 2, 3, 4),
    ") c WHERE l.fid = $1 AND l.type = 'follow' AND l.deleted_at IS NULL",
    " ORDER BY c.\"timestamp\" DESC, c.hash DESC LIMIT $4"
);
/// Live casts whose text matches, best first. `ts_rank` is computed again on every page for
/// the same text and query, so the rank in a cursor compares equal to the row's.
const SEARCH_CASTS_SQL: &str = concat!(
    "SELECT * FROM (SELECT ",
    cast_columns!(),
    ", ts_rank(to_tsvector('simple'::regconfig, c.text), query) AS rank, c.\"timestamp\" AS at",
    " FROM casts c, websearch_to_tsquery('simple'::regconfig, $1) query",
    " WHERE to_tsvector('simple'::regconfig, c.text) @@ query AND c.deleted_at IS NULL) m",
    " WHERE (m.rank, m.at, m.hash) < ($2, $3, $4)",
    " ORDER BY m.rank DESC, m.at DESC, m.hash DESC LIMIT $5"
);

const REACTION_SQL: &str = concat!(
    "SELECT ",
    reaction_columns!(),
    " FROM reactions r WHERE r.fid = $1 AND r.crdt_key = $2 AND r.deleted_at IS NULL"
);
const REACTIONS_BY_FID_SQL: &str = concat!(
    "SELECT ",
    reaction_columns!(),
    " FROM reactions r WHERE r.fid = $1 AND r.deleted_at IS NULL",
    " AND r.type = ANY($5) AND r.\"timestamp\" >= $6 AND r.\"timestamp\" <= $7",
    newest_first!("r", 2, 3, 4)
);
const REACTIONS_BY_CAST_SQL: &str = concat!(
    "SELECT ",
    reaction_columns!(),
    " FROM reactions r WHERE r.target_cast_hash = $1 AND r.target_cast_fid = $6",
    " AND r.deleted_at IS NULL AND r.type = ANY($5)",
    newest_first!("r", 2, 3, 4)
);
const REACTIONS_BY_URL_SQL: &str = concat!(
    "SELECT ",
    reaction_columns!(),
    " FROM reactions r WHERE r.target_url = $1 AND r.deleted_at IS NULL AND r.type = ANY($5)",
    newest_first!("r", 2, 3, 4)
);

const LINK_SQL: &str = concat!(
    "SELECT ",
    link_columns!(),
    " FROM links l WHERE l.fid = $1 AND l.crdt_key = $2 AND l.deleted_at IS NULL"
);
/// `$5` is the link type, or NULL for every type.
const LINKS_BY_FID_SQL: &str = concat!(
    "SELECT ",
    link_columns!(),
    " FROM links l WHERE l.fid = $1 AND l.deleted_at IS NULL",
    " AND ($5::text IS NULL OR l.type = $5) AND l.\"timestamp\" >= $6 AND l.\"timestamp\" <= $7",
    newest_first!("l", 2, 3, 4)
);
const LINKS_BY_TARGET_SQL: &str = concat!(
    "SELECT ",
    link_columns!(),
    " FROM links l WHERE l.target_fid = $1 AND l.deleted_at IS NULL",
    " AND ($5::text IS NULL OR l.type = $5)",
    newest_first!("l", 2, 3, 4)
);
const FOLLOW_COUNTS_SQL: &str = "SELECT \
     (SELECT count(*) FROM links WHERE target_fid = $1 AND type = 'follow' AND deleted_at IS NULL), \
     (SELECT count(*) FROM links WHERE fid = $1 AND type = 'follow' AND deleted_at IS NULL)";
const COMPACT_STATES_SQL: &str = "SELECT hash, fid, extract(epoch FROM \"timestamp\")::int8, \
     type, target_fids FROM link_compact_states WHERE fid = $1 ORDER BY type";

const VERIFICATION_SQL: &str = concat!(
    "SELECT ",
    verification_columns!(),
    " FROM verifications v WHERE v.fid = $1 AND v.signer_address = $2 AND v.deleted_at IS NULL"
);
const VERIFICATIONS_BY_FID_SQL: &str = concat!(
    "SELECT ",
    verification_columns!(),
    " FROM verifications v WHERE v.fid = $1 AND v.deleted_at IS NULL",
    " AND v.\"timestamp\" >= $5 AND v.\"timestamp\" <= $6",
    newest_first!("v", 2, 3, 4)
);

const USER_DATA_SQL: &str = "SELECT fid, type, hash, extract(epoch FROM \"timestamp\")::int8, \
     value FROM user_data WHERE fid = $1 AND deleted_at IS NULL ORDER BY type";
const PROOFS_BY_FID_SQL: &str = concat!(
    "SELECT ",
    proof_columns!(),
    " FROM username_proofs p WHERE p.fid = $1 AND p.deleted_at IS NULL ORDER BY p.username"
);
const PROOF_SQL: &str = concat!(
    "SELECT ",
    proof_columns!(),
    " FROM username_proofs p WHERE p.username = $1 AND p.deleted_at IS NULL"
);

/// `$2`/`$3` the position (block number, log index), `$4` the rows read, `$5` the event type
/// or NULL for every type.
const ONCHAIN_EVENTS_SQL: &str = "SELECT fid, type, chain_id, block_number, block_hash, \
     extract(epoch FROM block_timestamp)::int8, tx_hash, log_index, tx_index, body \
     FROM onchain_events WHERE fid = $1 AND deleted_at IS NULL \
     AND ($5::int2 IS NULL OR type = $5) AND (block_number, log_index) < ($2, $3) \
     ORDER BY block_number DESC, log_index DESC LIMIT $4";

/// Both reaction types, for a list of any type.
const ALL_REACTION_TYPES: [i16; 2] = [1, 2];

impl DbReader {
    /// (followers, following): live `follow` links to and from `fid`.
    pub async fn follow_counts(&self, fid: u64) -> Result<(u64, u64), SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok((0, 0));
        };
        let client = self.client().await?;
        follow_counts(&client, fid).await
    }

    /// Newest live casts of the accounts `fid` live-follows.
    pub async fn following_feed(
        &self,
        fid: u64,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(empty_page());
        };
        let (time, hash) = message_position(&page)?;
        let limit = Limit::of(&page);
        let rows = self
            .query(FOLLOWING_FEED_SQL, &[&fid, &time, &hash, &limit.fetch])
            .await?;
        Ok(limit.page(rows.iter().map(cast_of).collect(), cast_position))
    }

    /// Live casts whose text matches `query` (web search syntax: words, `"phrases"`, `or`,
    /// `-word`), best match first, then newest first. Any text is accepted; text without a
    /// searchable word matches nothing.
    pub async fn search_casts(
        &self,
        query: String,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let (rank, time, hash) = match page.cursor.as_ref().map(|cursor| &cursor.after) {
            None => (f32::INFINITY, unix_time(MAX_UNIX_SECONDS), Vec::new()),
            Some(None) => return Err(SourceError::CursorElsewhere),
            Some(Some(position)) => {
                let (rank, hash) = position
                    .key
                    .split_once(':')
                    .and_then(|(rank, hash)| {
                        Some((rank.parse::<f32>().ok()?, hex::decode(hash).ok()?))
                    })
                    .ok_or(SourceError::CursorElsewhere)?;
                (rank, farcaster_time(position.timestamp), hash)
            }
        };
        // PostgreSQL text cannot hold NUL; it separates words as a space would.
        let query = query.replace('\0', " ");
        let limit = Limit::of(&page);
        let rows = self
            .query(
                SEARCH_CASTS_SQL,
                &[&query, &rank, &time, &hash, &limit.fetch],
            )
            .await?;
        let ranked: Vec<(Cast, f32)> = rows.iter().map(|row| (cast_of(row), row.get(10))).collect();
        let mut page = limit.page(ranked, |(cast, rank)| Position {
            timestamp: cast.timestamp,
            key: format!("{rank}:{}", cast.hash),
        });
        Ok(Page {
            items: page.items.drain(..).map(|(cast, _)| cast).collect(),
            next_cursor: page.next_cursor,
        })
    }
}

impl DbReader {
    /// A profile from the fid's live user data and username proofs, with its follow counts;
    /// `None` when it has neither user data nor a username proof.
    pub async fn profile(&self, fid: u64) -> Result<Option<Profile>, SourceError> {
        let Some(id) = db_id(fid) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let user_data: Vec<UserDataValue> = rows(&client, USER_DATA_SQL, &[&id])
            .await?
            .iter()
            .map(user_data_of)
            .collect();
        let username_proofs: Vec<UsernameProof> = rows(&client, PROOFS_BY_FID_SQL, &[&id])
            .await?
            .iter()
            .map(proof_of)
            .collect();
        let Some(mut profile) = Profile::from_parts(fid, user_data, username_proofs) else {
            return Ok(None);
        };
        let (followers, following) = follow_counts(&client, id).await?;
        profile.follower_count = Some(followers);
        profile.following_count = Some(following);
        Ok(Some(profile))
    }

    /// The fid that holds the live username proof of `name` (names are lowercase, so any
    /// case finds it).
    pub async fn fid_by_username(&self, name: String) -> Result<Option<u64>, SourceError> {
        Ok(self.username_proof(name).await?.map(|proof| proof.fid))
    }

    pub async fn cast(&self, fid: u64, hash: Vec<u8>) -> Result<Option<Cast>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(None);
        };
        let rows = self.query(CAST_SQL, &[&hash, &fid]).await?;
        Ok(rows.first().map(cast_of))
    }

    pub async fn casts_by_fid(
        &self,
        fid: u64,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        self.casts_by_fid_in_window(fid, TimeWindow::default(), page)
            .await
    }

    pub async fn casts_by_mention(
        &self,
        fid: u64,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let (time, hash) = message_position(&page)?;
        let limit = Limit::of(&page);
        let mentioned = serde_json::json!([fid]);
        let rows = self
            .query(
                CASTS_BY_MENTION_SQL,
                &[&mentioned, &time, &hash, &limit.fetch],
            )
            .await?;
        Ok(limit.page(rows.iter().map(cast_of).collect(), cast_position))
    }

    pub async fn casts_by_parent(
        &self,
        fid: u64,
        hash: Vec<u8>,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(empty_page());
        };
        let (time, after_hash) = message_position(&page)?;
        let limit = Limit::of(&page);
        let rows = self
            .query(
                CASTS_BY_PARENT_SQL,
                &[&hash, &time, &after_hash, &limit.fetch, &fid],
            )
            .await?;
        Ok(limit.page(rows.iter().map(cast_of).collect(), cast_position))
    }

    pub async fn casts_by_parent_url(
        &self,
        url: String,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let (time, hash) = message_position(&page)?;
        let limit = Limit::of(&page);
        // Stored URLs had their NULs replaced the same way.
        let url = sanitize_text(&url).into_owned();
        let rows = self
            .query(CASTS_BY_PARENT_URL_SQL, &[&url, &time, &hash, &limit.fetch])
            .await?;
        Ok(limit.page(rows.iter().map(cast_of).collect(), cast_position))
    }

    pub async fn casts_by_fid_in_window(
        &self,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Cast>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(empty_page());
        };
        let (time, hash) = message_position(&page)?;
        let (start, end) = window_bounds(window);
        let limit = Limit::of(&page);
        let rows = self
            .query(
                CASTS_BY_FID_SQL,
                &[&fid, &time, &hash, &limit.fetch, &start, &end],
            )
            .await?;
        Ok(limit.page(rows.iter().map(cast_of).collect(), cast_position))
    }

    pub async fn reaction(
        &self,
        fid: u64,
        reaction_type: ReactionType,
        target: CastTarget,
    ) -> Result<Option<Reaction>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(None);
        };
        let key = match &target {
            CastTarget::Cast { hash, .. } => match hex::decode(hash) {
                Ok(hash) => reaction_key(reaction_type.id(), Some(&hash), None),
                Err(_) => return Ok(None),
            },
            CastTarget::Url { url } => {
                reaction_key(reaction_type.id(), None, Some(&sanitize_text(url)))
            }
        };
        let rows = self.query(REACTION_SQL, &[&fid, &key]).await?;
        // The key holds the target's hash, not its author: check that too.
        Ok(rows
            .iter()
            .filter_map(reaction_of)
            .find(|reaction| match (&reaction.target, &target) {
                (CastTarget::Cast { fid: found, .. }, CastTarget::Cast { fid: asked, .. }) => {
                    found == asked
                }
                _ => true,
            }))
    }

    pub async fn reactions_by_fid(
        &self,
        fid: u64,
        reaction_type: Option<ReactionType>,
        page: PageRequest,
    ) -> Result<Page<Reaction>, SourceError> {
        self.reactions_of_fid(fid, reaction_type, TimeWindow::default(), page)
            .await
    }

    pub async fn reactions_by_target(
        &self,
        target: CastTarget,
        reaction_type: Option<ReactionType>,
        page: PageRequest,
    ) -> Result<Page<Reaction>, SourceError> {
        let (time, hash) = message_position(&page)?;
        let limit = Limit::of(&page);
        let types = reaction_types(reaction_type);
        let rows = match target {
            CastTarget::Cast { fid, hash: target } => {
                let (Some(fid), Ok(target)) = (db_id(fid), hex::decode(&target)) else {
                    return Ok(empty_page());
                };
                self.query(
                    REACTIONS_BY_CAST_SQL,
                    &[&target, &time, &hash, &limit.fetch, &types, &fid],
                )
                .await?
            }
            CastTarget::Url { url } => {
                let url = sanitize_text(&url).into_owned();
                self.query(
                    REACTIONS_BY_URL_SQL,
                    &[&url, &time, &hash, &limit.fetch, &types],
                )
                .await?
            }
        };
        Ok(limit.page(
            rows.iter().filter_map(reaction_of).collect(),
            reaction_position,
        ))
    }

    pub async fn reactions_by_fid_in_window(
        &self,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Reaction>, SourceError> {
        self.reactions_of_fid(fid, None, window, page).await
    }

    pub async fn link(
        &self,
        fid: u64,
        link_type: String,
        target_fid: u64,
    ) -> Result<Option<Link>, SourceError> {
        let (Some(fid), Some(target_fid)) = (db_id(fid), db_id(target_fid)) else {
            return Ok(None);
        };
        let key = link_key(&sanitize_text(&link_type), target_fid);
        let rows = self.query(LINK_SQL, &[&fid, &key]).await?;
        Ok(rows.first().map(link_of))
    }

    pub async fn links_by_fid(
        &self,
        fid: u64,
        link_type: Option<String>,
        page: PageRequest,
    ) -> Result<Page<Link>, SourceError> {
        self.links_of_fid(fid, link_type, TimeWindow::default(), page)
            .await
    }

    pub async fn links_by_target(
        &self,
        target_fid: u64,
        link_type: Option<String>,
        page: PageRequest,
    ) -> Result<Page<Link>, SourceError> {
        let Some(target_fid) = db_id(target_fid) else {
            return Ok(empty_page());
        };
        let (time, hash) = message_position(&page)?;
        let limit = Limit::of(&page);
        let link_type = link_type.map(|name| sanitize_text(&name).into_owned());
        let rows = self
            .query(
                LINKS_BY_TARGET_SQL,
                &[&target_fid, &time, &hash, &limit.fetch, &link_type],
            )
            .await?;
        Ok(limit.page(rows.iter().map(link_of).collect(), link_position))
    }

    pub async fn links_by_fid_in_window(
        &self,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Link>, SourceError> {
        self.links_of_fid(fid, None, window, page).await
    }

    /// The fid's link compact states, by link type.
    pub async fn link_compact_state(&self, fid: u64) -> Result<Vec<LinkCompactState>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(Vec::new());
        };
        let rows = self.query(COMPACT_STATES_SQL, &[&fid]).await?;
        Ok(rows
            .iter()
            .map(|row| LinkCompactState {
                hash: hex::encode(row.get::<_, Vec<u8>>(0)),
                fid: row.get::<_, i64>(1) as u64,
                timestamp: farcaster_seconds(row.get(2)),
                link_type: row.get(3),
                target_fids: row
                    .get::<_, Vec<i64>>(4)
                    .into_iter()
                    .map(|fid| fid as u64)
                    .collect(),
            })
            .collect())
    }

    pub async fn verifications_by_fid(
        &self,
        fid: u64,
        page: PageRequest,
    ) -> Result<Page<Verification>, SourceError> {
        self.verifications_by_fid_in_window(fid, TimeWindow::default(), page)
            .await
    }

    /// The live verification of `address` (`0x…` hex in any case, or base58 for Solana).
    pub async fn verification(
        &self,
        fid: u64,
        address: String,
    ) -> Result<Option<Verification>, SourceError> {
        let (Some(fid), Some(address)) = (db_id(fid), parse_verification_address(&address)) else {
            return Ok(None);
        };
        let rows = self.query(VERIFICATION_SQL, &[&fid, &address]).await?;
        Ok(rows.first().map(verification_of))
    }

    pub async fn verifications_by_fid_in_window(
        &self,
        fid: u64,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Verification>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(empty_page());
        };
        let (time, hash) = message_position(&page)?;
        let (start, end) = window_bounds(window);
        let limit = Limit::of(&page);
        let rows = self
            .query(
                VERIFICATIONS_BY_FID_SQL,
                &[&fid, &time, &hash, &limit.fetch, &start, &end],
            )
            .await?;
        Ok(limit.page(
            rows.iter().map(verification_of).collect(),
            verification_position,
        ))
    }

    /// The fid's live username proofs, by name.
    pub async fn username_proofs_by_fid(
        &self,
        fid: u64,
    ) -> Result<Vec<UsernameProof>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(Vec::new());
        };
        let rows = self.query(PROOFS_BY_FID_SQL, &[&fid]).await?;
        Ok(rows.iter().map(proof_of).collect())
    }

    /// The live proof of `name`, in any case.
    pub async fn username_proof(&self, name: String) -> Result<Option<UsernameProof>, SourceError> {
        let name = sanitize_text(&name).to_lowercase();
        let rows = self.query(PROOF_SQL, &[&name]).await?;
        Ok(rows.first().map(proof_of))
    }

    /// The fid's on-chain events, newest first by block and log index.
    pub async fn onchain_events(
        &self,
        fid: u64,
        event_type: Option<i32>,
        page: PageRequest,
    ) -> Result<Page<OnChainEvent>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(empty_page());
        };
        let (block, log_index) = match page.cursor.as_ref().map(|cursor| &cursor.after) {
            None => (i64::MAX, i32::MAX),
            Some(None) => return Err(SourceError::CursorElsewhere),
            Some(Some(position)) => position
                .key
                .split_once(':')
                .and_then(|(block, log)| {
                    Some((block.parse::<i64>().ok()?, log.parse::<i32>().ok()?))
                })
                .ok_or(SourceError::CursorElsewhere)?,
        };
        let Ok(event_type) = event_type.map(i16::try_from).transpose() else {
            return Ok(empty_page());
        };
        let limit = Limit::of(&page);
        let rows = self
            .query(
                ONCHAIN_EVENTS_SQL,
                &[&fid, &block, &log_index, &limit.fetch, &event_type],
            )
            .await?;
        Ok(
            limit.page(rows.iter().map(onchain_event_of).collect(), |event| {
                Position {
                    timestamp: event.block_timestamp,
                    key: format!("{}:{}", event.block_number, event.log_index),
                }
            }),
        )
    }
}

/// Helpers shared by several queries.
impl DbReader {
    async fn client(&self) -> Result<deadpool_postgres::Object, SourceError> {
        Ok(self.pg.get().await?)
    }

    /// Runs one prepared statement on a pooled connection.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SourceError> {
        let client = self.client().await?;
        rows(&client, sql, params).await
    }

    async fn reactions_of_fid(
        &self,
        fid: u64,
        reaction_type: Option<ReactionType>,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Reaction>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(empty_page());
        };
        let (time, hash) = message_position(&page)?;
        let (start, end) = window_bounds(window);
        let limit = Limit::of(&page);
        let types = reaction_types(reaction_type);
        let rows = self
            .query(
                REACTIONS_BY_FID_SQL,
                &[&fid, &time, &hash, &limit.fetch, &types, &start, &end],
            )
            .await?;
        Ok(limit.page(
            rows.iter().filter_map(reaction_of).collect(),
            reaction_position,
        ))
    }

    async fn links_of_fid(
        &self,
        fid: u64,
        link_type: Option<String>,
        window: TimeWindow,
        page: PageRequest,
    ) -> Result<Page<Link>, SourceError> {
        let Some(fid) = db_id(fid) else {
            return Ok(empty_page());
        };
        let (time, hash) = message_position(&page)?;
        let (start, end) = window_bounds(window);
        let limit = Limit::of(&page);
        let link_type = link_type.map(|name| sanitize_text(&name).into_owned());
        let rows = self
            .query(
                LINKS_BY_FID_SQL,
                &[&fid, &time, &hash, &limit.fetch, &link_type, &start, &end],
            )
            .await?;
        Ok(limit.page(rows.iter().map(link_of).collect(), link_position))
    }
}

async fn rows(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, SourceError> {
    let statement = client.prepare_cached(sql).await.map_err(database)?;
    client.query(&statement, params).await.map_err(database)
}

async fn follow_counts(
    client: &deadpool_postgres::Object,
    fid: i64,
) -> Result<(u64, u64), SourceError> {
    let rows = rows(client, FOLLOW_COUNTS_SQL, &[&fid]).await?;
    Ok(rows.first().map_or((0, 0), |row| {
        (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64)
    }))
}

fn database(error: tokio_postgres::Error) -> SourceError {
    SourceError::Database(StoreError::from(error))
}

/// A fid or other id as the database stores it; `None` beyond `bigint` (nothing is there).
fn db_id(value: u64) -> Option<i64> {
    i64::try_from(value).ok()
}

fn empty_page<T>() -> Page<T> {
    Page {
        items: Vec::new(),
        next_cursor: None,
    }
}

/// A Unix time as a `timestamptz` parameter, clamped to what `time` can hold.
fn unix_time(unix_seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_seconds.clamp(0, MAX_UNIX_SECONDS))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A Farcaster time (a message timestamp) as a `timestamptz` parameter.
fn farcaster_time(farcaster_seconds: u64) -> OffsetDateTime {
    unix_time(
        i64::try_from(farcaster_seconds)
            .unwrap_or(i64::MAX)
            .saturating_add(EPOCH),
    )
}

/// A stored message time (Unix seconds) in Farcaster seconds.
fn farcaster_seconds(unix_seconds: i64) -> u64 {
    u64::try_from(unix_seconds.saturating_sub(EPOCH)).unwrap_or(0)
}

/// The inclusive bounds of a window over message times (Unix seconds); an open end is the
/// beginning or the end of time.
fn window_bounds(window: TimeWindow) -> (OffsetDateTime, OffsetDateTime) {
    let seconds = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    (
        unix_time(window.start.map_or(0, seconds)),
        unix_time(window.end.map_or(MAX_UNIX_SECONDS, seconds)),
    )
}

/// The position a message list continues after: (time, hash) of the last item, or past the
/// newest row for a first page.
fn message_position(page: &PageRequest) -> Result<(OffsetDateTime, Vec<u8>), SourceError> {
    match page.cursor.as_ref().map(|cursor| &cursor.after) {
        None => Ok((unix_time(MAX_UNIX_SECONDS), Vec::new())),
        Some(None) => Err(SourceError::CursorElsewhere),
        Some(Some(position)) => {
            let hash = hex::decode(&position.key).map_err(|_| SourceError::CursorElsewhere)?;
            Ok((farcaster_time(position.timestamp), hash))
        }
    }
}

fn reaction_types(reaction_type: Option<ReactionType>) -> Vec<i16> {
    match reaction_type {
        Some(reaction_type) => vec![reaction_type.id() as i16],
        None => ALL_REACTION_TYPES.to_vec(),
    }
}

/// Rows per page, and rows read (one more, to know whether a next page exists).
struct Limit {
    size: usize,
    fetch: i64,
}

impl Limit {
    fn of(page: &PageRequest) -> Limit {
        let size = page.limit.clamp(1, MAX_PAGE_SIZE);
        Limit {
            size: size as usize,
            fetch: i64::from(size) + 1,
        }
    }

    /// The page of `items` (read with `fetch`), with a cursor after its last item when more
    /// were read.
    fn page<T>(&self, mut items: Vec<T>, position: impl Fn(&T) -> Position) -> Page<T> {
        let more = items.len() > self.size;
        items.truncate(self.size);
        let next_cursor = if more {
            items.last().map(|last| {
                Cursor {
                    hub_token: None,
                    after: Some(position(last)),
                }
                .encode()
            })
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

fn cast_position(cast: &Cast) -> Position {
    Position {
        timestamp: cast.timestamp,
        key: cast.hash.clone(),
    }
}

fn reaction_position(reaction: &Reaction) -> Position {
    Position {
        timestamp: reaction.timestamp,
        key: reaction.hash.clone(),
    }
}

fn link_position(link: &Link) -> Position {
    Position {
        timestamp: link.timestamp,
        key: link.hash.clone(),
    }
}

fn verification_position(verification: &Verification) -> Position {
    Position {
        timestamp: verification.timestamp,
        key: verification.hash.clone(),
    }
}

/// A cast from [`cast_columns`].
fn cast_of(row: &Row) -> Cast {
    let parent = match (
        row.get::<_, Option<i64>>(4),
        row.get::<_, Option<Vec<u8>>>(5),
        row.get::<_, Option<String>>(6),
    ) {
        (Some(fid), Some(hash), _) => Some(CastTarget::Cast {
            fid: fid as u64,
            hash: hex::encode(hash),
        }),
        (_, _, Some(url)) => Some(CastTarget::Url { url }),
        _ => None,
    };
    let embeds: serde_json::Value = row.get(7);
    let mentions: serde_json::Value = row.get(8);
    let positions: serde_json::Value = row.get(9);
    Cast {
        hash: hex::encode(row.get::<_, Vec<u8>>(0)),
        fid: row.get::<_, i64>(1) as u64,
        timestamp: farcaster_seconds(row.get(2)),
        text: row.get(3),
        parent,
        embeds: embeds_from_json(&embeds)
            .into_iter()
            .map(|embed| match embed {
                EmbedRow::Url(url) => Embed::Url { url },
                EmbedRow::Cast { fid, hash } => Embed::Cast { fid, hash },
            })
            .collect(),
        mentions: numbers(&mentions),
        mentions_positions: numbers(&positions)
            .into_iter()
            .map(|position| position as u32)
            .collect(),
    }
}

/// A reaction from [`reaction_columns`]; `None` for a type the protocol does not define.
fn reaction_of(row: &Row) -> Option<Reaction> {
    let reaction_type = ReactionType::from_id(i32::from(row.get::<_, i16>(3)))?;
    let target = match (
        row.get::<_, Option<i64>>(4),
        row.get::<_, Option<Vec<u8>>>(5),
        row.get::<_, Option<String>>(6),
    ) {
        (Some(fid), Some(hash), _) => CastTarget::Cast {
            fid: fid as u64,
            hash: hex::encode(hash),
        },
        (_, _, url) => CastTarget::Url {
            url: url.unwrap_or_default(),
        },
    };
    Some(Reaction {
        hash: hex::encode(row.get::<_, Vec<u8>>(0)),
        fid: row.get::<_, i64>(1) as u64,
        timestamp: farcaster_seconds(row.get(2)),
        reaction_type,
        target,
    })
}

/// A link from [`link_columns`].
fn link_of(row: &Row) -> Link {
    Link {
        hash: hex::encode(row.get::<_, Vec<u8>>(0)),
        fid: row.get::<_, i64>(1) as u64,
        timestamp: farcaster_seconds(row.get(2)),
        link_type: row.get(3),
        target_fid: row.get::<_, i64>(4) as u64,
        display_timestamp: row.get::<_, Option<i64>>(5).map(farcaster_seconds),
    }
}

/// A verification from [`verification_columns`].
fn verification_of(row: &Row) -> Verification {
    let protocol = i32::from(row.get::<_, i16>(4));
    Verification {
        hash: hex::encode(row.get::<_, Vec<u8>>(0)),
        fid: row.get::<_, i64>(1) as u64,
        timestamp: farcaster_seconds(row.get(2)),
        address: verification_address(protocol, &row.get::<_, Vec<u8>>(3)),
        protocol: verification_protocol_name(protocol).to_owned(),
        block_hash: row
            .get::<_, Option<Vec<u8>>>(5)
            .map(hex::encode)
            .unwrap_or_default(),
        verification_type: row.get::<_, i16>(6) as u32,
        chain_id: row.get::<_, i32>(7) as u32,
    }
}

/// A user data value from [`USER_DATA_SQL`].
fn user_data_of(row: &Row) -> UserDataValue {
    let data_type = i32::from(row.get::<_, i16>(1));
    UserDataValue {
        hash: hex::encode(row.get::<_, Vec<u8>>(2)),
        fid: row.get::<_, i64>(0) as u64,
        timestamp: farcaster_seconds(row.get(3)),
        data_type,
        data_type_name: user_data_type_name(data_type).to_owned(),
        value: row.get(4),
    }
}

/// A username proof from [`proof_columns`] (its time is Unix seconds, as issued).
fn proof_of(row: &Row) -> UsernameProof {
    UsernameProof {
        name: row.get(0),
        fid: row.get::<_, i64>(1) as u64,
        timestamp: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        proof_type: username_proof_type_name(i32::from(row.get::<_, i16>(3))).to_owned(),
        owner: format!("0x{}", hex::encode(row.get::<_, Vec<u8>>(4))),
        signature: hex::encode(row.get::<_, Vec<u8>>(5)),
    }
}

/// An on-chain event from [`ONCHAIN_EVENTS_SQL`].
fn onchain_event_of(row: &Row) -> OnChainEvent {
    let event_type = i32::from(row.get::<_, i16>(1));
    OnChainEvent {
        fid: row.get::<_, i64>(0) as u64,
        event_type,
        event_type_name: onchain_event_type_name(event_type).to_owned(),
        chain_id: row.get::<_, i32>(2) as u32,
        block_number: row.get::<_, i64>(3) as u32,
        block_hash: row
            .get::<_, Option<Vec<u8>>>(4)
            .map(hex::encode)
            .unwrap_or_default(),
        block_timestamp: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
        transaction_hash: hex::encode(row.get::<_, Vec<u8>>(6)),
        log_index: row.get::<_, i32>(7) as u32,
        tx_index: row.get::<_, i32>(8) as u32,
        body: row.get(9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(limit: u32, after: Option<Position>) -> PageRequest {
        PageRequest {
            limit,
            cursor: after.map(|after| Cursor {
                hub_token: None,
                after: Some(after),
            }),
        }
    }

    #[test]
    fn a_page_has_a_cursor_only_when_more_rows_were_read() {
        let limit = Limit::of(&request(2, None));
        assert_eq!(limit.fetch, 3);
        let position = |n: &u64| Position {
            timestamp: *n,
            key: format!("{n:02x}"),
        };
        let full = limit.page(vec![9u64, 8, 7], position);
        assert_eq!(full.items, vec![9, 8]);
        let cursor = Cursor::decode("cursor", full.next_cursor.as_deref().unwrap_or("")).unwrap();
        assert_eq!(cursor.after, Some(position(&8)));
        assert_eq!(limit.page(vec![9u64, 8], position).next_cursor, None);
        assert_eq!(Limit::of(&request(0, None)).size, 1);
        assert_eq!(
            Limit::of(&request(u32::MAX, None)).size,
            MAX_PAGE_SIZE as usize
        );
    }

    #[test]
    fn positions_read_back_and_foreign_cursors_are_refused() {
        let (time, hash) = message_position(&request(
            10,
            Some(Position {
                timestamp: 100,
                key: "ab01".into(),
            }),
        ))
        .unwrap();
        assert_eq!(time.unix_timestamp(), EPOCH + 100);
        assert_eq!(hash, vec![0xab, 0x01]);
        let hub_only = PageRequest {
            limit: 10,
            cursor: Some(Cursor {
                hub_token: Some("00".into()),
                after: None,
            }),
        };
        assert!(matches!(
            message_position(&hub_only),
            Err(SourceError::CursorElsewhere)
        ));
        let garbage = request(
            10,
            Some(Position {
                timestamp: u64::MAX,
                key: "not hex".into(),
            }),
        );
        assert!(matches!(
            message_position(&garbage),
            Err(SourceError::CursorElsewhere)
        ));
        assert_eq!(farcaster_time(u64::MAX).unix_timestamp(), MAX_UNIX_SECONDS);
        assert_eq!(farcaster_seconds(EPOCH - 5), 0);
    }

    #[test]
    fn windows_are_inclusive_and_open_ends_reach_every_time() {
        let (start, end) = window_bounds(TimeWindow {
            start: Some(10),
            end: Some(u64::MAX),
        });
        assert_eq!(start.unix_timestamp(), 10);
        assert_eq!(end.unix_timestamp(), MAX_UNIX_SECONDS);
        let (start, end) = window_bounds(TimeWindow::default());
        assert_eq!(
            (start.unix_timestamp(), end.unix_timestamp()),
            (0, MAX_UNIX_SECONDS)
        );
    }

    #[test]
    fn ranks_print_so_they_read_back_exactly() {
        for rank in [0.0607927_f32, 1.0 / 3.0, f32::MIN_POSITIVE, 1e-30] {
            assert_eq!(format!("{rank}").parse::<f32>().ok(), Some(rank));
        }
    }
}
