-- The replica of the Farcaster network. Column names follow the existing open-source Waypoint
-- schema, so SQL written against it keeps working. A row is live when deleted_at IS NULL.
-- Message times are stored as timestamptz (converted from Farcaster seconds).

CREATE TABLE casts (
    hash bytea PRIMARY KEY,
    fid bigint NOT NULL,
    "timestamp" timestamptz NOT NULL,
    text text NOT NULL,
    type smallint NOT NULL DEFAULT 0,
    parent_fid bigint,
    parent_hash bytea,
    parent_url text,
    embeds jsonb NOT NULL DEFAULT '[]',
    mentions jsonb NOT NULL DEFAULT '[]',
    mentions_positions jsonb NOT NULL DEFAULT '[]',
    root_parent_fid bigint,
    root_parent_hash bytea,
    root_parent_url text,
    signer bytea,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX casts_fid_timestamp ON casts (fid, "timestamp" DESC);
CREATE INDEX casts_parent_hash ON casts (parent_hash) WHERE parent_hash IS NOT NULL;
CREATE INDEX casts_parent_url ON casts (parent_url, "timestamp" DESC) WHERE parent_url IS NOT NULL;
CREATE INDEX casts_root_parent_hash ON casts (root_parent_hash) WHERE root_parent_hash IS NOT NULL;
CREATE INDEX casts_mentions ON casts USING gin (mentions jsonb_path_ops);

CREATE TABLE reactions (
    hash bytea PRIMARY KEY,
    fid bigint NOT NULL,
    type smallint NOT NULL,
    target_cast_fid bigint,
    target_cast_hash bytea,
    target_url text,
    -- Conflict key within the fid: reaction type and target (see src/store/rows.rs).
    crdt_key bytea NOT NULL,
    "timestamp" timestamptz NOT NULL,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reactions_key ON reactions (fid, crdt_key);
CREATE INDEX reactions_fid_timestamp ON reactions (fid, "timestamp" DESC);
CREATE INDEX reactions_target_cast ON reactions (target_cast_hash, type) WHERE target_cast_hash IS NOT NULL;
CREATE INDEX reactions_target_url ON reactions (target_url, type) WHERE target_url IS NOT NULL;

CREATE TABLE links (
    hash bytea PRIMARY KEY,
    fid bigint NOT NULL,
    target_fid bigint NOT NULL,
    type text NOT NULL,
    display_timestamp timestamptz,
    -- Conflict key within the fid: link type and target fid.
    crdt_key bytea NOT NULL,
    "timestamp" timestamptz NOT NULL,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX links_key ON links (fid, crdt_key);
CREATE INDEX links_fid_type ON links (fid, type, "timestamp" DESC);
CREATE INDEX links_target ON links (target_fid, type);

CREATE TABLE verifications (
    hash bytea PRIMARY KEY,
    fid bigint NOT NULL,
    -- The verified address (Ethereum or Solana), as in the existing schema.
    signer_address bytea NOT NULL,
    block_hash bytea,
    claim_signature bytea,
    verification_type smallint NOT NULL DEFAULT 0,
    chain_id integer NOT NULL DEFAULT 0,
    protocol smallint NOT NULL DEFAULT 0,
    "timestamp" timestamptz NOT NULL,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verifications_key ON verifications (fid, signer_address);
CREATE INDEX verifications_address ON verifications (signer_address);

-- One row per (fid, type): the newest value.
CREATE TABLE user_data (
    fid bigint NOT NULL,
    type smallint NOT NULL,
    value text NOT NULL,
    hash bytea NOT NULL,
    "timestamp" timestamptz NOT NULL,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fid, type)
);
CREATE INDEX user_data_hash ON user_data (hash);
CREATE INDEX user_data_username ON user_data (lower(value)) WHERE type = 6;

-- One row per name: the newest proof.
CREATE TABLE username_proofs (
    username text PRIMARY KEY,
    fid bigint NOT NULL,
    type smallint NOT NULL,
    owner bytea NOT NULL,
    signature bytea NOT NULL,
    "timestamp" timestamptz NOT NULL,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX username_proofs_fid ON username_proofs (fid);

CREATE TABLE onchain_events (
    chain_id integer NOT NULL,
    tx_hash bytea NOT NULL,
    log_index integer NOT NULL,
    fid bigint NOT NULL,
    type smallint NOT NULL,
    block_number bigint NOT NULL,
    block_hash bytea,
    block_timestamp timestamptz NOT NULL,
    tx_index integer NOT NULL DEFAULT 0,
    version integer NOT NULL DEFAULT 0,
    -- Body fields (signer key, registration addresses, storage units, ...).
    body jsonb NOT NULL DEFAULT '{}',
    "timestamp" timestamptz NOT NULL,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, tx_hash, log_index)
);
CREATE INDEX onchain_events_fid_type ON onchain_events (fid, type);

-- Every message as received, when database.store_messages is on.
CREATE TABLE messages (
    hash bytea PRIMARY KEY,
    fid bigint NOT NULL,
    type smallint NOT NULL,
    "timestamp" timestamptz NOT NULL,
    signer bytea NOT NULL,
    body jsonb NOT NULL DEFAULT '{}',
    raw bytea NOT NULL,
    pruned_at timestamptz,
    revoked_at timestamptz,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_fid_type ON messages (fid, type, "timestamp" DESC);

-- Internal: remove messages (cast, reaction, link and verification removes). They decide the
-- liveness of adds that arrive before or after them, so they are kept apart from the tables
-- users query. set_kind: 1 cast (crdt_key = target hash), 2 reaction, 3 link, 4 verification.
CREATE TABLE crdt_removes (
    hash bytea PRIMARY KEY,
    set_kind smallint NOT NULL,
    fid bigint NOT NULL,
    crdt_key bytea NOT NULL,
    "timestamp" timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crdt_removes_key ON crdt_removes (set_kind, fid, crdt_key);
CREATE INDEX crdt_removes_cast_target ON crdt_removes (crdt_key) WHERE set_kind = 1;

-- Internal: messages taken out by PRUNE_MESSAGE (reason 1) or REVOKE_MESSAGE (reason 2),
-- remembered so an add that arrives after its prune stays out.
CREATE TABLE message_tombstones (
    hash bytea PRIMARY KEY,
    reason smallint NOT NULL,
    at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Internal: the newest LINK_COMPACT_STATE per (fid, type).
CREATE TABLE link_compact_states (
    fid bigint NOT NULL,
    type text NOT NULL,
    hash bytea NOT NULL,
    "timestamp" timestamptz NOT NULL,
    target_fids bigint[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fid, type)
);

-- Internal: username proofs the hub deleted (a fid dropping or transferring a name).
CREATE TABLE username_proof_removals (
    username text NOT NULL,
    fid bigint NOT NULL,
    "timestamp" timestamptz NOT NULL,
    -- When the hub deleted it.
    at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, fid, "timestamp")
);
