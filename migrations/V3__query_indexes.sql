-- Indexes of the read API (src/query/db.rs). Every list is newest first by ("timestamp" DESC,
-- hash DESC) over live rows, paginated by keyset, so each list has a partial index over the
-- live rows in exactly that order: a page is one index range scan however long the list is.
-- Removed rows (deleted_at set) leave these indexes, so they cost nothing to skip.

CREATE INDEX casts_live_fid ON casts (fid, "timestamp" DESC, hash DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX casts_live_parent_hash ON casts (parent_hash, "timestamp" DESC, hash DESC)
    WHERE deleted_at IS NULL AND parent_hash IS NOT NULL;
CREATE INDEX casts_live_parent_url ON casts (parent_url, "timestamp" DESC, hash DESC)
    WHERE deleted_at IS NULL AND parent_url IS NOT NULL;
-- Full-text search over live cast text. The 'simple' configuration (no stemming, no stop words)
-- because casts are in every language; queries must use the same expression to match it.
CREATE INDEX casts_live_text_search ON casts USING gin (to_tsvector('simple'::regconfig, text))
    WHERE deleted_at IS NULL;

CREATE INDEX reactions_live_fid ON reactions (fid, "timestamp" DESC, hash DESC)
    INCLUDE (type) WHERE deleted_at IS NULL;
CREATE INDEX reactions_live_target_cast ON reactions (target_cast_hash, "timestamp" DESC, hash DESC)
    INCLUDE (type) WHERE deleted_at IS NULL AND target_cast_hash IS NOT NULL;
CREATE INDEX reactions_live_target_url ON reactions (target_url, "timestamp" DESC, hash DESC)
    INCLUDE (type) WHERE deleted_at IS NULL AND target_url IS NOT NULL;

-- The link type is included so a type filter, and the follower and following counts, are
-- answered from the index.
CREATE INDEX links_live_fid ON links (fid, "timestamp" DESC, hash DESC)
    INCLUDE (type, target_fid) WHERE deleted_at IS NULL;
CREATE INDEX links_live_target ON links (target_fid, "timestamp" DESC, hash DESC)
    INCLUDE (type) WHERE deleted_at IS NULL;

CREATE INDEX verifications_live_fid ON verifications (fid, "timestamp" DESC, hash DESC)
    WHERE deleted_at IS NULL;

-- On-chain events are newest first by block, then log index.
CREATE INDEX onchain_events_fid_block ON onchain_events (fid, block_number DESC, log_index DESC);
