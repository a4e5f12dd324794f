//! The apply rules: one implementation of the Farcaster CRDT rules that turns hub events (live
//! path) and hub messages (backfill) into rows. Order-independent and idempotent, so
//! at-least-once delivery in any order, with duplicates, converges to the hub's state.
//!
//! | set | conflict key | rule |
//! |---|---|---|
//! | casts | hash | a CastRemove takes its target out, also when the add arrives after it |
//! | reactions, links, verifications | (fid, crdt_key) | newest timestamp wins; on a tie a remove beats an add, then the higher hash; only the winning add is live |
//! | links | (fid, type) | a LINK_COMPACT_STATE takes out adds of its type not in `target_fids` and not newer than it |
//! | user_data | (fid, type) | one row: the newest (timestamp, hash) |
//! | username_proofs | name | one row: the newest proof; a matching deleted proof takes it out |
//! | onchain_events | (chain_id, tx_hash, log_index) | append-only |
//! | any message | hash | PRUNE/REVOKE take it out, also when it arrives later; a pruned winner still wins its key |
//! | any message | hash | a backfill that finds the hub no longer holds it takes it out the same way (tombstone reason 3) |
//!
//! Removes and tombstones are kept in internal tables (`crdt_removes`, `message_tombstones`,
//! `username_proof_removals`) so the order of arrival does not matter. A batch is one
//! transaction with one statement per table (multi-row `unnest`), then set-based statements
//! that recompute liveness for the keys the batch touched. Concurrent batches of the same set
//! serialise on one advisory lock per set (see `lock_ids`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio_postgres::types::ToSql;
use waypoint_proto::{HubEvent, Message};

use super::rows::{Batch, CastRow, SetKind, SkipReason};

/// Passes of the reply-chain root fix-up per batch (one level each).
const ROOT_FIXUP_PASSES: usize = 16;

/// One hub event to apply, with its raw bytes when they are at hand.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub event: &'a HubEvent,
    pub raw: Option<&'a [u8]>,
}

/// Options of a batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Also keep every message in `messages`.
    pub store_messages: bool,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Rows inserted or updated, per table.
    pub rows_written: BTreeMap<&'static str, u64>,
    /// Inputs (by index) that produced nothing, and why.
    pub skipped: Vec<(usize, SkipReason)>,
}

/// Errors of applying a batch.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl ApplyError {
    /// A database that is unreachable or busy (connection, serialization, deadlock, lock or
    /// statement timeouts, shutdown) may recover; a rejection of the data will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApplyError::Unavailable(_) => true,
            ApplyError::Database(error) => match error.code() {
                None => true,
                Some(code) => {
                    let code = code.code();
                    code.starts_with("08")
                        || code.starts_with("40")
                        || code.starts_with("53")
                        || code.starts_with("57")
                        || code == "55P03"
                }
            },
        }
    }

    /// For callers that cannot reach the database at all.
    pub fn unavailable(message: &str) -> ApplyError {
        ApplyError::Unavailable(message.to_owned())
    }
}

/// Applies hub events (the live path).
pub async fn apply_events(
    client: &mut deadpool_postgres::Client,
    events: &[EventInput<'_>],
    options: &ApplyOptions,
) -> Result<Applied, ApplyError> {
    let mut batch = Batch::default();
    for (index, input) in events.iter().enumerate() {
        batch.add_event(index, input.event, options.store_messages);
    }
    write(client, &batch).await
}

/// Applies messages as the hub's store holds them (the backfill path), with the same rules.
pub async fn apply_messages(
    client: &mut deadpool_postgres::Client,
    messages: &[Message],
    options: &ApplyOptions,
) -> Result<Applied, ApplyError> {
    let mut batch = Batch::default();
    for (index, message) in messages.iter().enumerate() {
        batch.add_message(index, message, options.store_messages);
    }
    write(client, &batch).await
}

/// Applies rows already gathered into a batch (the backfill gathers the pages of many FIDs,
/// their on-chain events, username proofs and the rows the hub no longer holds).
pub async fn apply_batch(
    client: &mut deadpool_postgres::Client,
    batch: &Batch,
) -> Result<Applied, ApplyError> {
    write(client, batch).await
}

async fn write(
    client: &mut deadpool_postgres::Client,
    batch: &Batch,
) -> Result<Applied, ApplyError> {
    let mut applied = Applied {
        rows_written: BTreeMap::new(),
        skipped: batch.skipped.clone(),
    };
    let locks = lock_ids(batch);
    let tx = client.transaction().await?;
    // Every statement below reaches rows by key through an index. With batches of thousands
    // of keys against tables of a few hundred thousand rows the planner prices a hash join
    // over a whole-table scan below thousands of index probes, and each batch then hashes the
    // entire table: measured at 100 ms a statement at 300k casts. Scans stay possible where
    // no index serves (the setting only prices them out), and only for this transaction.
    let statement = tx
        .prepare_cached(
            "SELECT set_config('enable_seqscan', 'off', true),
                    set_config('plan_cache_mode', 'force_generic_plan', true),
                    (SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k)",
        )
        .await?;
    tx.query_one(&statement, &[&locks]).await?;
    let mut writer = Writer {
        tx: &tx,
        written: &mut applied.rows_written,
    };
    writer.tombstones(batch).await?;
    writer.removes(batch).await?;
    writer.casts(batch).await?;
    writer.reactions(batch).await?;
    writer.links(batch).await?;
    writer.verifications(batch).await?;
    writer.user_data(batch).await?;
    writer.username_proofs(batch).await?;
    writer.onchain(batch).await?;
    writer.messages(batch).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Advisory lock ids, one per set the batch writes, sorted (so concurrent batches never
/// deadlock). Batches of the same set from concurrent consumers apply one after the other, so
/// each sees the other's rows when it recomputes liveness; different sets apply in parallel.
/// Finer (per-key) locks were measured: a batch of hundreds of random keys takes nearly every
/// bucket anyway, and the lock-manager work cost more than it saved.
fn lock_ids(batch: &Batch) -> Vec<i64> {
    // Namespace of Waypoint's advisory locks ("WAYP"), so other applications' locks on the same
    // database do not collide with them.
    const NAMESPACE: i64 = 0x5741_5950 << 32;
    let mut sets = BTreeSet::new();
    if !batch.casts.is_empty() || batch.removes.iter().any(|r| r.set_kind == SetKind::Cast) {
        sets.insert(SetKind::Cast as i64);
    }
    if !batch.reactions.is_empty()
        || batch
            .removes
            .iter()
            .any(|r| r.set_kind == SetKind::Reaction)
    {
        sets.insert(SetKind::Reaction as i64);
    }
    if !batch.links.is_empty()
        || !batch.compact_states.is_empty()
        || batch.removes.iter().any(|r| r.set_kind == SetKind::Link)
    {
        sets.insert(SetKind::Link as i64);
    }
    if !batch.verifications.is_empty()
        || batch
            .removes
            .iter()
            .any(|r| r.set_kind == SetKind::Verification)
    {
        sets.insert(SetKind::Verification as i64);
    }
    if !batch.user_data.is_empty() {
        sets.insert(5);
    }
    if !batch.proofs.is_empty() || !batch.proof_removals.is_empty() {
        sets.insert(6);
    }
    if !batch.tombstones.is_empty() {
        // Tombstones touch rows of any set: serialise them with every set.
        sets.extend([1, 2, 3, 4, 5]);
    }
    sets.extend(batch.rechecks.iter().map(|recheck| recheck.set_kind as i64));
    sets.into_iter().map(|set| NAMESPACE | set).collect()
}

/// The casts of a batch grouped by reply depth within the batch: first those whose parent is
/// not in the batch, then replies to those, and so on.
fn reply_levels(casts: &[CastRow]) -> Vec<Vec<&CastRow>> {
    let index: HashMap<&[u8], usize> = casts
        .iter()
        .enumerate()
        .map(|(i, cast)| (cast.hash.as_slice(), i))
        .collect();
    let mut depth: Vec<Option<usize>> = vec![None; casts.len()];
    for start in 0..casts.len() {
        // Walk up to the first ancestor of known depth (or outside the batch), then assign
        // depths on the way back down. Hashes rule out cycles; one would be cut, not followed.
        let mut chain = Vec::new();
        let mut current = start;
        let base = loop {
            if let Some(known) = depth[current] {
                break known + 1;
            }
            chain.push(current);
            let parent = casts[current]
                .parent_hash
                .as_deref()
                .and_then(|parent| index.get(parent).copied());
            match parent {
                Some(parent) if !chain.contains(&parent) => {
                    current = parent;
                }
                _ => break 0,
            }
        };
        for (offset, &node) in chain.iter().rev().enumerate() {
            depth[node] = Some(base + offset);
        }
    }
    let mut levels: Vec<Vec<&CastRow>> = Vec::new();
    for (cast, depth) in casts.iter().zip(depth) {
        let depth = depth.unwrap_or(0);
        if levels.len() <= depth {
            levels.resize_with(depth + 1, Vec::new);
        }
        levels[depth].push(cast);
    }
    levels
}

struct Writer<'a, 'b> {
    tx: &'a deadpool_postgres::Transaction<'b>,
    written: &'a mut BTreeMap<&'static str, u64>,
}

impl Writer<'_, '_> {
    async fn execute(
        &mut self,
        table: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, ApplyError> {
        let statement = self.tx.prepare_cached(sql).await?;
        let rows = self.tx.execute(&statement, params).await?;
        if rows > 0 {
            *self.written.entry(table).or_default() += rows;
        }
        Ok(rows)
    }

    async fn tombstones(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        if batch.tombstones.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&[u8]> = batch.tombstones.iter().map(|t| t.hash.as_slice()).collect();
        let reasons: Vec<i16> = batch.tombstones.iter().map(|t| t.reason).collect();
        let at: Vec<i64> = batch.tombstones.iter().map(|t| t.at).collect();
        self.execute(
            "message_tombstones",
            "INSERT INTO message_tombstones (hash, reason, at)
             SELECT u.hash, u.reason, to_timestamp(u.at)
             FROM unnest($1::bytea[], $2::int2[], $3::int8[]) AS u(hash, reason, at)
             ON CONFLICT (hash) DO NOTHING",
            &[&hashes, &reasons, &at],
        )
        .await?;
        // Rows already present leave the live set. Keyed sets are recomputed below (their
        // rows are in this batch too); casts, user data and messages are updated here.
        self.execute(
            "casts",
            "UPDATE casts c SET deleted_at = to_timestamp(u.at), updated_at = now()
             FROM unnest($1::bytea[], $2::int8[]) AS u(hash, at)
             WHERE c.hash = u.hash AND c.deleted_at IS NULL",
            &[&hashes, &at],
        )
        .await?;
        self.execute(
            "user_data",
            "UPDATE user_data d SET deleted_at = to_timestamp(u.at), updated_at = now()
             FROM unnest($1::bytea[], $2::int8[]) AS u(hash, at)
             WHERE d.hash = u.hash AND d.deleted_at IS NULL",
            &[&hashes, &at],
        )
        .await?;
        self.execute(
            "messages",
            "UPDATE messages m SET
                 pruned_at = CASE WHEN u.reason = 1 THEN to_timestamp(u.at) ELSE m.pruned_at END,
                 revoked_at = CASE WHEN u.reason = 2 THEN to_timestamp(u.at) ELSE m.revoked_at END,
                 deleted_at = COALESCE(m.deleted_at, to_timestamp(u.at)),
                 updated_at = now()
             FROM unnest($1::bytea[], $2::int2[], $3::int8[]) AS u(hash, reason, at)
             WHERE m.hash = u.hash",
            &[&hashes, &reasons, &at],
        )
        .await?;
        Ok(())
    }

    async fn removes(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        if batch.removes.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&[u8]> = batch.removes.iter().map(|r| r.hash.as_slice()).collect();
        let kinds: Vec<i16> = batch.removes.iter().map(|r| r.set_kind as i16).collect();
        let fids: Vec<i64> = batch.removes.iter().map(|r| r.fid).collect();
        let keys: Vec<&[u8]> = batch
            .removes
            .iter()
            .map(|r| r.crdt_key.as_slice())
            .collect();
        let timestamps: Vec<i64> = batch.removes.iter().map(|r| r.timestamp).collect();
        self.execute(
            "crdt_removes",
            "INSERT INTO crdt_removes (hash, set_kind, fid, crdt_key, \"timestamp\")
             SELECT u.hash, u.kind, u.fid, u.key, to_timestamp(u.ts)
             FROM unnest($1::bytea[], $2::int2[], $3::int8[], $4::bytea[], $5::int8[]) AS u(hash, kind, fid, key, ts)
             ON CONFLICT (hash) DO NOTHING",
            &[&hashes, &kinds, &fids, &keys, &timestamps],
        )
        .await?;
        let cast_targets: Vec<&[u8]> = batch
            .removes
            .iter()
            .filter(|r| r.set_kind == SetKind::Cast)
            .map(|r| r.crdt_key.as_slice())
            .collect();
        if !cast_targets.is_empty() {
            let cast_times: Vec<i64> = batch
                .removes
                .iter()
                .filter(|r| r.set_kind == SetKind::Cast)
                .map(|r| r.timestamp)
                .collect();
            self.execute(
                "casts",
                "UPDATE casts c SET deleted_at = to_timestamp(u.ts), updated_at = now()
                 FROM unnest($1::bytea[], $2::int8[]) AS u(target, ts)
                 WHERE c.hash = u.target AND c.deleted_at IS NULL",
                &[&cast_targets, &cast_times],
            )
            .await?;
        }
        Ok(())
    }

    async fn casts(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        if batch.casts.is_empty() {
            return Ok(());
        }
        // Parents go in before their replies, so a reply finds its parent's root already
        // stored instead of being rewritten (with all its indexes) by the fix-up.
        let mut inserted = Vec::new();
        for level in reply_levels(&batch.casts) {
            inserted.extend(self.insert_casts(&level).await?);
        }
        if inserted.is_empty() {
            return Ok(());
        }
        self.fix_roots(&inserted).await
    }

    /// Inserts casts, taking each reply's root from its parent when the parent is stored.
    /// Returns the hashes of the rows that were new.
    async fn insert_casts(&mut self, rows: &[&CastRow]) -> Result<Vec<Vec<u8>>, ApplyError> {
        let hashes: Vec<&[u8]> = rows.iter().map(|c| c.hash.as_slice()).collect();
        let fids: Vec<i64> = rows.iter().map(|c| c.fid).collect();
        let timestamps: Vec<i64> = rows.iter().map(|c| c.timestamp).collect();
        let texts: Vec<&str> = rows.iter().map(|c| c.text.as_str()).collect();
        let types: Vec<i16> = rows.iter().map(|c| c.cast_type).collect();
        let parent_fids: Vec<Option<i64>> = rows.iter().map(|c| c.parent_fid).collect();
        let parent_hashes: Vec<Option<&[u8]>> =
            rows.iter().map(|c| c.parent_hash.as_deref()).collect();
        let parent_urls: Vec<Option<&str>> = rows.iter().map(|c| c.parent_url.as_deref()).collect();
        let embeds: Vec<&serde_json::Value> = rows.iter().map(|c| &c.embeds).collect();
        let mentions: Vec<&serde_json::Value> = rows.iter().map(|c| &c.mentions).collect();
        let positions: Vec<&serde_json::Value> =
            rows.iter().map(|c| &c.mentions_positions).collect();
        let signers: Vec<&[u8]> = rows.iter().map(|c| c.signer.as_slice()).collect();
        let statement = self
            .tx
            .prepare_cached(
                "INSERT INTO casts (hash, fid, \"timestamp\", text, type, parent_fid, parent_hash, parent_url,
                                    embeds, mentions, mentions_positions, signer,
                                    root_parent_fid, root_parent_hash, root_parent_url, deleted_at)
                 SELECT u.hash, u.fid, to_timestamp(u.ts), u.text, u.type, u.parent_fid, u.parent_hash, u.parent_url,
                        u.embeds, u.mentions, u.positions, u.signer,
                        CASE WHEN p.hash IS NULL THEN u.parent_fid ELSE COALESCE(p.root_parent_fid, p.fid) END,
                        CASE WHEN p.hash IS NULL THEN u.parent_hash ELSE COALESCE(p.root_parent_hash, p.hash) END,
                        CASE WHEN p.hash IS NULL THEN u.parent_url ELSE COALESCE(p.root_parent_url, p.parent_url) END,
                        LEAST((SELECT min(r.\"timestamp\") FROM crdt_removes r WHERE r.set_kind = 1 AND r.crdt_key = u.hash),
                              (SELECT t.at FROM message_tombstones t WHERE t.hash = u.hash))
                 FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::text[], $5::int2[], $6::int8[], $7::bytea[],
                             $8::text[], $9::jsonb[], $10::jsonb[], $11::jsonb[], $12::bytea[])
                      AS u(hash, fid, ts, text, type, parent_fid, parent_hash, parent_url, embeds, mentions, positions, signer)
                 LEFT JOIN casts p ON p.hash = u.parent_hash
                 ON CONFLICT (hash) DO NOTHING
                 RETURNING hash",
            )
            .await?;
        let inserted = self
            .tx
            .query(
                &statement,
                &[
                    &hashes,
                    &fids,
                    &timestamps,
                    &texts,
                    &types,
                    &parent_fids,
                    &parent_hashes,
                    &parent_urls,
                    &embeds,
                    &mentions,
                    &positions,
                    &signers,
                ],
            )
            .await?;
        *self.written.entry("casts").or_default() += inserted.len() as u64;
        Ok(inserted.iter().map(|row| row.get(0)).collect())
    }

    /// Points replies already stored below new casts at the top of their reply chain: replies
    /// that arrived before their parent. (Replies to a parent in the same batch got their root
    /// at insert, see [`reply_levels`].) Best effort across arrival orders: each pass settles
    /// one more level.
    async fn fix_roots(&mut self, inserted: &[Vec<u8>]) -> Result<(), ApplyError> {
        for _ in 0..ROOT_FIXUP_PASSES {
            let moved = self
                .execute(
                    "casts",
                    "UPDATE casts d SET root_parent_fid = COALESCE(x.root_parent_fid, d.root_parent_fid),
                                        root_parent_hash = COALESCE(x.root_parent_hash, d.root_parent_hash),
                                        root_parent_url = COALESCE(x.root_parent_url, d.root_parent_url)
                     FROM casts x
                     WHERE d.root_parent_hash = ANY($1) AND x.hash = d.root_parent_hash AND d.hash <> x.hash
                       AND (x.root_parent_hash IS NOT NULL OR x.root_parent_url IS DISTINCT FROM d.root_parent_url)
                       AND (x.root_parent_hash IS DISTINCT FROM d.root_parent_hash
                            OR x.root_parent_url IS DISTINCT FROM d.root_parent_url)",
                    &[&inserted],
                )
                .await?;
            if moved == 0 {
                break;
            }
        }
        Ok(())
    }

    async fn reactions(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        let rows = &batch.reactions;
        if !rows.is_empty() {
            let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
            let fids: Vec<i64> = rows.iter().map(|r| r.fid).collect();
            let types: Vec<i16> = rows.iter().map(|r| r.reaction_type).collect();
            let cast_fids: Vec<Option<i64>> = rows.iter().map(|r| r.target_cast_fid).collect();
            let cast_hashes: Vec<Option<&[u8]>> =
                rows.iter().map(|r| r.target_cast_hash.as_deref()).collect();
            let urls: Vec<Option<&str>> = rows.iter().map(|r| r.target_url.as_deref()).collect();
            let keys: Vec<&[u8]> = rows.iter().map(|r| r.crdt_key.as_slice()).collect();
            let timestamps: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
            self.execute(
                "reactions",
                "INSERT INTO reactions (hash, fid, type, target_cast_fid, target_cast_hash, target_url, crdt_key, \"timestamp\", deleted_at)
                 SELECT u.hash, u.fid, u.type, u.cast_fid, u.cast_hash, u.url, u.key, to_timestamp(u.ts), NULL
                 FROM unnest($1::bytea[], $2::int8[], $3::int2[], $4::int8[], $5::bytea[], $6::text[], $7::bytea[], $8::int8[])
                      AS u(hash, fid, type, cast_fid, cast_hash, url, key, ts)
                 ON CONFLICT (hash) DO NOTHING",
                &[&hashes, &fids, &types, &cast_fids, &cast_hashes, &urls, &keys, &timestamps],
            )
            .await?;
        }
        let keys = touched_keys(
            batch,
            SetKind::Reaction,
            rows.iter().map(|r| (r.fid, r.crdt_key.as_slice())),
        );
        self.recompute("reactions", SetKind::Reaction, &keys, "")
            .await
    }

    async fn links(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        let rows = &batch.links;
        if !rows.is_empty() {
            let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
            let fids: Vec<i64> = rows.iter().map(|r| r.fid).collect();
            let targets: Vec<i64> = rows.iter().map(|r| r.target_fid).collect();
            let types: Vec<&str> = rows.iter().map(|r| r.link_type.as_str()).collect();
            let display: Vec<Option<i64>> = rows.iter().map(|r| r.display_timestamp).collect();
            let keys: Vec<&[u8]> = rows.iter().map(|r| r.crdt_key.as_slice()).collect();
            let timestamps: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
            self.execute(
                "links",
                "INSERT INTO links (hash, fid, target_fid, type, display_timestamp, crdt_key, \"timestamp\", deleted_at)
                 SELECT u.hash, u.fid, u.target, u.type, to_timestamp(u.display), u.key, to_timestamp(u.ts), NULL
                 FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::text[], $5::int8[], $6::bytea[], $7::int8[])
                      AS u(hash, fid, target, type, display, key, ts)
                 ON CONFLICT (hash) DO NOTHING",
                &[&hashes, &fids, &targets, &types, &display, &keys, &timestamps],
            )
            .await?;
        }
        let mut keys = touched_keys(
            batch,
            SetKind::Link,
            rows.iter().map(|r| (r.fid, r.crdt_key.as_slice())),
        );
        // Compact states: keep the newest per (fid, type), then recheck every link they cover.
        let mut newest: HashMap<(i64, &str), &super::rows::CompactStateRow> = HashMap::new();
        for state in &batch.compact_states {
            let slot = newest
                .entry((state.fid, state.link_type.as_str()))
                .or_insert(state);
            if (state.timestamp, &state.hash) > (slot.timestamp, &slot.hash) {
                *slot = state;
            }
        }
        for state in newest.values() {
            self.execute(
                "link_compact_states",
                "INSERT INTO link_compact_states (fid, type, hash, \"timestamp\", target_fids)
                 VALUES ($1, $2, $3, to_timestamp($4::int8), $5)
                 ON CONFLICT (fid, type) DO UPDATE SET hash = EXCLUDED.hash, \"timestamp\" = EXCLUDED.\"timestamp\",
                     target_fids = EXCLUDED.target_fids, updated_at = now()
                 WHERE (EXCLUDED.\"timestamp\", EXCLUDED.hash) > (link_compact_states.\"timestamp\", link_compact_states.hash)",
                &[&state.fid, &state.link_type, &state.hash, &state.timestamp, &state.target_fids],
            )
            .await?;
            let statement = self
                .tx
                .prepare_cached("SELECT crdt_key FROM links WHERE fid = $1 AND type = $2")
                .await?;
            for row in self
                .tx
                .query(&statement, &[&state.fid, &state.link_type])
                .await?
            {
                keys.insert((state.fid, row.get::<_, Vec<u8>>(0)));
            }
        }
        self.recompute(
            "links",
            SetKind::Link,
            &keys,
            "AND NOT EXISTS (SELECT 1 FROM link_compact_states s
                             WHERE s.fid = r.fid AND s.type = r.type AND s.\"timestamp\" >= r.\"timestamp\"
                               AND NOT (r.target_fid = ANY(s.target_fids)))",
        )
        .await
    }

    async fn verifications(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        let rows = &batch.verifications;
        if !rows.is_empty() {
            let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
            let fids: Vec<i64> = rows.iter().map(|r| r.fid).collect();
            let addresses: Vec<&[u8]> = rows.iter().map(|r| r.address.as_slice()).collect();
            let block_hashes: Vec<&[u8]> = rows.iter().map(|r| r.block_hash.as_slice()).collect();
            let claims: Vec<&[u8]> = rows.iter().map(|r| r.claim_signature.as_slice()).collect();
            let kinds: Vec<i16> = rows.iter().map(|r| r.verification_type).collect();
            let chains: Vec<i32> = rows.iter().map(|r| r.chain_id).collect();
            let protocols: Vec<i16> = rows.iter().map(|r| r.protocol).collect();
            let timestamps: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
            self.execute(
                "verifications",
                "INSERT INTO verifications (hash, fid, signer_address, block_hash, claim_signature, verification_type,
                                            chain_id, protocol, \"timestamp\", deleted_at)
                 SELECT u.hash, u.fid, u.address, u.block_hash, u.claim, u.kind, u.chain, u.protocol, to_timestamp(u.ts), NULL
                 FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[], $5::bytea[], $6::int2[], $7::int4[], $8::int2[], $9::int8[])
                      AS u(hash, fid, address, block_hash, claim, kind, chain, protocol, ts)
                 ON CONFLICT (hash) DO NOTHING",
                &[&hashes, &fids, &addresses, &block_hashes, &claims, &kinds, &chains, &protocols, &timestamps],
            )
            .await?;
        }
        let keys = touched_keys(
            batch,
            SetKind::Verification,
            rows.iter().map(|r| (r.fid, r.address.as_slice())),
        );
        self.recompute("verifications", SetKind::Verification, &keys, "")
            .await
    }

    /// Re-decides which add (if any) is live for each touched key of a keyed set.
    async fn recompute(
        &mut self,
        table: &'static str,
        kind: SetKind,
        keys: &BTreeSet<(i64, Vec<u8>)>,
        extra_live_condition: &str,
    ) -> Result<(), ApplyError> {
        if keys.is_empty() {
            return Ok(());
        }
        let key_column = if kind == SetKind::Verification {
            "signer_address"
        } else {
            "crdt_key"
        };
        let fids: Vec<i64> = keys.iter().map(|(fid, _)| *fid).collect();
        let key_values: Vec<&[u8]> = keys.iter().map(|(_, key)| key.as_slice()).collect();
        let set_kind = kind as i16;
        // Only what the rule reads is materialised (the compact-state rule of links reads the
        // link's type and target).
        let link_columns = if kind == SetKind::Link {
            ", r.type, r.target_fid"
        } else {
            ""
        };
        let sql = format!(
            "WITH k AS (SELECT DISTINCT fid, key FROM unnest($1::int8[], $2::bytea[]) AS k(fid, key)),
             adds AS MATERIALIZED (
                 SELECT r.hash, r.fid, r.{key_column}, r.\"timestamp\"{link_columns}
                 FROM {table} r JOIN k ON r.fid = k.fid AND r.{key_column} = k.key
             ),
             win AS (
                 SELECT DISTINCT ON (fid, key) fid, key, ts, is_remove, hash
                 FROM (
                     SELECT a.fid, a.{key_column} AS key, a.\"timestamp\" AS ts, 0 AS is_remove, a.hash
                     FROM adds a
                     UNION ALL
                     SELECT m.fid, m.crdt_key, m.\"timestamp\", 1, m.hash
                     FROM crdt_removes m JOIN k ON m.set_kind = $3 AND m.fid = k.fid AND m.crdt_key = k.key
                 ) AS cand
                 ORDER BY fid, key, ts DESC, is_remove DESC, hash DESC
             ),
             want AS (
                 SELECT r.hash, w.ts AS win_ts,
                        (w.is_remove = 0 AND w.hash = r.hash
                         AND NOT EXISTS (SELECT 1 FROM message_tombstones t WHERE t.hash = r.hash)
                         {extra_live_condition}) AS live
                 FROM adds r JOIN win w ON r.fid = w.fid AND r.{key_column} = w.key
             )
             UPDATE {table} r
             SET deleted_at = CASE WHEN want.live THEN NULL ELSE COALESCE(r.deleted_at, want.win_ts) END,
                 updated_at = now()
             FROM want
             WHERE r.hash = want.hash AND (r.deleted_at IS NULL) IS DISTINCT FROM want.live"
        );
        self.execute(table, &sql, &[&fids, &key_values, &set_kind])
            .await?;
        Ok(())
    }

    async fn user_data(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        if batch.user_data.is_empty() {
            return Ok(());
        }
        // One row per (fid, type) per statement: keep the newest of the batch.
        let mut newest: HashMap<(i64, i16), usize> = HashMap::new();
        for (index, row) in batch.user_data.iter().enumerate() {
            let slot = newest.entry((row.fid, row.data_type)).or_insert(index);
            let current = &batch.user_data[*slot];
            if (row.timestamp, &row.hash) > (current.timestamp, &current.hash) {
                *slot = index;
            }
        }
        let rows: Vec<&super::rows::UserDataRow> = newest
            .values()
            .map(|&index| &batch.user_data[index])
            .collect();
        let fids: Vec<i64> = rows.iter().map(|r| r.fid).collect();
        let types: Vec<i16> = rows.iter().map(|r| r.data_type).collect();
        let values: Vec<&str> = rows.iter().map(|r| r.value.as_str()).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
        let timestamps: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
        self.execute(
            "user_data",
            "INSERT INTO user_data (fid, type, value, hash, \"timestamp\", deleted_at)
             SELECT u.fid, u.type, u.value, u.hash, to_timestamp(u.ts),
                    (SELECT t.at FROM message_tombstones t WHERE t.hash = u.hash)
             FROM unnest($1::int8[], $2::int2[], $3::text[], $4::bytea[], $5::int8[]) AS u(fid, type, value, hash, ts)
             ON CONFLICT (fid, type) DO UPDATE SET value = EXCLUDED.value, hash = EXCLUDED.hash,
                 \"timestamp\" = EXCLUDED.\"timestamp\", deleted_at = EXCLUDED.deleted_at, updated_at = now()
             WHERE (EXCLUDED.\"timestamp\", EXCLUDED.hash) > (user_data.\"timestamp\", user_data.hash)",
            &[&fids, &types, &values, &hashes, &timestamps],
        )
        .await?;
        Ok(())
    }

    async fn username_proofs(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        if !batch.proof_removals.is_empty() {
            let names: Vec<&str> = batch
                .proof_removals
                .iter()
                .map(|r| r.username.as_str())
                .collect();
            let fids: Vec<i64> = batch.proof_removals.iter().map(|r| r.fid).collect();
            let timestamps: Vec<i64> = batch.proof_removals.iter().map(|r| r.timestamp).collect();
            let at: Vec<i64> = batch.proof_removals.iter().map(|r| r.at).collect();
            self.execute(
                "username_proof_removals",
                "INSERT INTO username_proof_removals (username, fid, \"timestamp\", at)
                 SELECT u.name, u.fid, to_timestamp(u.ts), to_timestamp(u.at)
                 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS u(name, fid, ts, at)
                 ON CONFLICT DO NOTHING",
                &[&names, &fids, &timestamps, &at],
            )
            .await?;
            self.execute(
                "username_proofs",
                "UPDATE username_proofs p SET deleted_at = to_timestamp(u.at), updated_at = now()
                 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS u(name, fid, ts, at)
                 WHERE p.username = u.name AND p.fid = u.fid AND p.\"timestamp\" = to_timestamp(u.ts)
                   AND p.deleted_at IS NULL",
                &[&names, &fids, &timestamps, &at],
            )
            .await?;
        }
        if batch.proofs.is_empty() {
            return Ok(());
        }
        let mut newest: HashMap<&str, usize> = HashMap::new();
        for (index, row) in batch.proofs.iter().enumerate() {
            let slot = newest.entry(row.username.as_str()).or_insert(index);
            let current = &batch.proofs[*slot];
            if (row.timestamp, row.fid) > (current.timestamp, current.fid) {
                *slot = index;
            }
        }
        let rows: Vec<&super::rows::ProofRow> =
            newest.values().map(|&index| &batch.proofs[index]).collect();
        let names: Vec<&str> = rows.iter().map(|r| r.username.as_str()).collect();
        let fids: Vec<i64> = rows.iter().map(|r| r.fid).collect();
        let types: Vec<i16> = rows.iter().map(|r| r.proof_type).collect();
        let owners: Vec<&[u8]> = rows.iter().map(|r| r.owner.as_slice()).collect();
        let signatures: Vec<&[u8]> = rows.iter().map(|r| r.signature.as_slice()).collect();
        let timestamps: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
        self.execute(
            "username_proofs",
            "INSERT INTO username_proofs (username, fid, type, owner, signature, \"timestamp\", deleted_at)
             SELECT u.name, u.fid, u.type, u.owner, u.signature, to_timestamp(u.ts),
                    (SELECT min(r.at) FROM username_proof_removals r
                     WHERE r.username = u.name AND r.fid = u.fid AND r.\"timestamp\" = to_timestamp(u.ts))
             FROM unnest($1::text[], $2::int8[], $3::int2[], $4::bytea[], $5::bytea[], $6::int8[])
                  AS u(name, fid, type, owner, signature, ts)
             ON CONFLICT (username) DO UPDATE SET fid = EXCLUDED.fid, type = EXCLUDED.type, owner = EXCLUDED.owner,
                 signature = EXCLUDED.signature, \"timestamp\" = EXCLUDED.\"timestamp\",
                 deleted_at = EXCLUDED.deleted_at, updated_at = now()
             WHERE (EXCLUDED.\"timestamp\", EXCLUDED.fid) > (username_proofs.\"timestamp\", username_proofs.fid)",
            &[&names, &fids, &types, &owners, &signatures, &timestamps],
        )
        .await?;
        Ok(())
    }

    async fn onchain(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        let rows = &batch.onchain;
        if rows.is_empty() {
            return Ok(());
        }
        let chains: Vec<i32> = rows.iter().map(|r| r.chain_id).collect();
        let tx_hashes: Vec<&[u8]> = rows.iter().map(|r| r.tx_hash.as_slice()).collect();
        let log_indexes: Vec<i32> = rows.iter().map(|r| r.log_index).collect();
        let fids: Vec<i64> = rows.iter().map(|r| r.fid).collect();
        let types: Vec<i16> = rows.iter().map(|r| r.event_type).collect();
        let blocks: Vec<i64> = rows.iter().map(|r| r.block_number).collect();
        let block_hashes: Vec<&[u8]> = rows.iter().map(|r| r.block_hash.as_slice()).collect();
        let block_times: Vec<i64> = rows.iter().map(|r| r.block_timestamp).collect();
        let tx_indexes: Vec<i32> = rows.iter().map(|r| r.tx_index).collect();
        let versions: Vec<i32> = rows.iter().map(|r| r.version).collect();
        let bodies: Vec<&serde_json::Value> = rows.iter().map(|r| &r.body).collect();
        self.execute(
            "onchain_events",
            "INSERT INTO onchain_events (chain_id, tx_hash, log_index, fid, type, block_number, block_hash,
                                         block_timestamp, tx_index, version, body, \"timestamp\")
             SELECT u.chain, u.tx, u.log, u.fid, u.type, u.block, u.block_hash, to_timestamp(u.block_ts),
                    u.tx_index, u.version, u.body, to_timestamp(u.block_ts)
             FROM unnest($1::int4[], $2::bytea[], $3::int4[], $4::int8[], $5::int2[], $6::int8[], $7::bytea[],
                         $8::int8[], $9::int4[], $10::int4[], $11::jsonb[])
                  AS u(chain, tx, log, fid, type, block, block_hash, block_ts, tx_index, version, body)
             ON CONFLICT (chain_id, tx_hash, log_index) DO NOTHING",
            &[
                &chains, &tx_hashes, &log_indexes, &fids, &types, &blocks, &block_hashes, &block_times, &tx_indexes,
                &versions, &bodies,
            ],
        )
        .await?;
        Ok(())
    }

    async fn messages(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        let rows = &batch.messages;
        if rows.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
        let fids: Vec<i64> = rows.iter().map(|r| r.fid).collect();
        let types: Vec<i16> = rows.iter().map(|r| r.message_type).collect();
        let timestamps: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
        let signers: Vec<&[u8]> = rows.iter().map(|r| r.signer.as_slice()).collect();
        let bodies: Vec<&serde_json::Value> = rows.iter().map(|r| &r.body).collect();
        let raws: Vec<&[u8]> = rows.iter().map(|r| r.raw.as_slice()).collect();
        self.execute(
            "messages",
            "INSERT INTO messages (hash, fid, type, \"timestamp\", signer, body, raw, pruned_at, revoked_at, deleted_at)
             SELECT u.hash, u.fid, u.type, to_timestamp(u.ts), u.signer, u.body, u.raw,
                    (SELECT t.at FROM message_tombstones t WHERE t.hash = u.hash AND t.reason = 1),
                    (SELECT t.at FROM message_tombstones t WHERE t.hash = u.hash AND t.reason = 2),
                    (SELECT t.at FROM message_tombstones t WHERE t.hash = u.hash)
             FROM unnest($1::bytea[], $2::int8[], $3::int2[], $4::int8[], $5::bytea[], $6::jsonb[], $7::bytea[])
                  AS u(hash, fid, type, ts, signer, body, raw)
             ON CONFLICT (hash) DO NOTHING",
            &[&hashes, &fids, &types, &timestamps, &signers, &bodies, &raws],
        )
        .await?;
        Ok(())
    }
}

/// The (fid, key) pairs of a keyed set that the batch touches: its adds, its removes and the
/// keys it asks to recheck.
fn touched_keys<'a>(
    batch: &'a Batch,
    kind: SetKind,
    adds: impl Iterator<Item = (i64, &'a [u8])>,
) -> BTreeSet<(i64, Vec<u8>)> {
    adds.map(|(fid, key)| (fid, key.to_vec()))
        .chain(
            batch
                .removes
                .iter()
                .filter(|remove| remove.set_kind == kind)
                .map(|remove| (remove.fid, remove.crdt_key.clone())),
        )
        .chain(
            batch
                .rechecks
                .iter()
                .filter(|recheck| recheck.set_kind == kind)
                .map(|recheck| (recheck.fid, recheck.key.clone())),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn cast(hash: u8, parent: Option<u8>) -> CastRow {
        CastRow {
            hash: vec![hash],
            fid: 1,
            timestamp: 0,
            text: String::new(),
            cast_type: 0,
            parent_fid: parent.map(|_| 1),
            parent_hash: parent.map(|parent| vec![parent]),
            parent_url: None,
            embeds: Value::Null,
            mentions: Value::Null,
            mentions_positions: Value::Null,
            signer: Vec::new(),
        }
    }

    fn hashes(levels: &[Vec<&CastRow>]) -> Vec<Vec<u8>> {
        levels
            .iter()
            .map(|level| level.iter().map(|cast| cast.hash[0]).collect())
            .collect()
    }

    #[test]
    fn replies_come_after_their_parents_in_the_batch() {
        // 4 → 3 → 2 → 1 (1 outside the batch), listed leaves first; 5 replies to 9 (outside);
        // 6 replies to 2; 7 is a top-level cast.
        let batch = [
            cast(4, Some(3)),
            cast(3, Some(2)),
            cast(6, Some(2)),
            cast(2, Some(1)),
            cast(5, Some(9)),
            cast(7, None),
        ];
        assert_eq!(
            hashes(&reply_levels(&batch)),
            vec![vec![2, 5, 7], vec![3, 6], vec![4]]
        );
        assert!(reply_levels(&[]).is_empty());
    }

    #[test]
    fn a_cycle_is_cut_not_followed() {
        let batch = [cast(1, Some(2)), cast(2, Some(1)), cast(3, Some(3))];
        let levels = reply_levels(&batch);
        assert_eq!(levels.iter().map(Vec::len).sum::<usize>(), 3);
    }
}
