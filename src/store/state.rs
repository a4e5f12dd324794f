//! Reads the replica back from PostgreSQL as a [`ReplicaState`], to compare with the dev hub's
//! `--dump-state` (tests, benchmarks and operators checking a deployment).

use crate::hub::ids::FARCASTER_EPOCH_UNIX_SECONDS;
use crate::replica::{
    CastRow, EmbedRow, LinkRow, OnchainEventRow, ReactionRow, ReplicaState, UserDataRow,
    UsernameProofRow, VerificationRow,
};

/// Reads every table. Rows are sorted by key.
pub async fn read_replica(
    client: &impl tokio_postgres::GenericClient,
) -> Result<ReplicaState, tokio_postgres::Error> {
    let epoch = FARCASTER_EPOCH_UNIX_SECONDS as i64;
    let mut state = ReplicaState::default();

    for row in client
        .query(
            "SELECT hash, fid, extract(epoch FROM \"timestamp\")::int8, text, parent_fid, parent_hash, parent_url,
                    embeds, mentions, mentions_positions, deleted_at IS NULL FROM casts",
            &[],
        )
        .await?
    {
        let embeds: serde_json::Value = row.get(7);
        let mentions: serde_json::Value = row.get(8);
        let positions: serde_json::Value = row.get(9);
        state.casts.push(CastRow {
            hash: hex::encode(row.get::<_, Vec<u8>>(0)),
            fid: row.get::<_, i64>(1) as u64,
            timestamp: (row.get::<_, i64>(2) - epoch) as u64,
            text: row.get(3),
            parent_fid: row.get::<_, Option<i64>>(4).map(|fid| fid as u64),
            parent_hash: row.get::<_, Option<Vec<u8>>>(5).map(hex::encode),
            parent_url: row.get(6),
            embeds: embeds_from_json(&embeds),
            mentions: numbers(&mentions),
            mentions_positions: numbers(&positions).into_iter().map(|n| n as u32).collect(),
            live: row.get(10),
        });
    }

    for row in client
        .query(
            "SELECT hash, fid, extract(epoch FROM \"timestamp\")::int8, type, target_cast_fid, target_cast_hash, target_url,
                    deleted_at IS NULL FROM reactions",
            &[],
        )
        .await?
    {
        state.reactions.push(ReactionRow {
            hash: hex::encode(row.get::<_, Vec<u8>>(0)),
            fid: row.get::<_, i64>(1) as u64,
            timestamp: (row.get::<_, i64>(2) - epoch) as u64,
            reaction_type: i32::from(row.get::<_, i16>(3)),
            target_cast_fid: row.get::<_, Option<i64>>(4).map(|fid| fid as u64),
            target_cast_hash: row.get::<_, Option<Vec<u8>>>(5).map(hex::encode),
            target_url: row.get(6),
            live: row.get(7),
        });
    }

    for row in client
        .query(
            "SELECT hash, fid, extract(epoch FROM \"timestamp\")::int8, type, target_fid,
                    extract(epoch FROM display_timestamp)::int8, deleted_at IS NULL FROM links",
            &[],
        )
        .await?
    {
        state.links.push(LinkRow {
            hash: hex::encode(row.get::<_, Vec<u8>>(0)),
            fid: row.get::<_, i64>(1) as u64,
            timestamp: (row.get::<_, i64>(2) - epoch) as u64,
            link_type: row.get(3),
            target_fid: row.get::<_, i64>(4) as u64,
            display_timestamp: row
                .get::<_, Option<i64>>(5)
                .map(|unix| (unix - epoch) as u64),
            live: row.get(6),
        });
    }

    for row in client
        .query(
            "SELECT hash, fid, extract(epoch FROM \"timestamp\")::int8, signer_address, protocol, deleted_at IS NULL
             FROM verifications",
            &[],
        )
        .await?
    {
        state.verifications.push(VerificationRow {
            hash: hex::encode(row.get::<_, Vec<u8>>(0)),
            fid: row.get::<_, i64>(1) as u64,
            timestamp: (row.get::<_, i64>(2) - epoch) as u64,
            address: hex::encode(row.get::<_, Vec<u8>>(3)),
            protocol: i32::from(row.get::<_, i16>(4)),
            live: row.get(5),
        });
    }

    for row in client
        .query(
            "SELECT fid, type, hash, extract(epoch FROM \"timestamp\")::int8, value, deleted_at IS NULL FROM user_data",
            &[],
        )
        .await?
    {
        state.user_data.push(UserDataRow {
            fid: row.get::<_, i64>(0) as u64,
            user_data_type: i32::from(row.get::<_, i16>(1)),
            hash: hex::encode(row.get::<_, Vec<u8>>(2)),
            timestamp: (row.get::<_, i64>(3) - epoch) as u64,
            value: row.get(4),
            live: row.get(5),
        });
    }

    for row in client
        .query(
            "SELECT username, fid, type, owner, extract(epoch FROM \"timestamp\")::int8, deleted_at IS NULL
             FROM username_proofs",
            &[],
        )
        .await?
    {
        state.username_proofs.push(UsernameProofRow {
            name: row.get(0),
            fid: row.get::<_, i64>(1) as u64,
            proof_type: i32::from(row.get::<_, i16>(2)),
            owner: hex::encode(row.get::<_, Vec<u8>>(3)),
            timestamp: row.get::<_, i64>(4) as u64,
            live: row.get(5),
        });
    }

    for row in client
        .query(
            "SELECT chain_id, tx_hash, log_index, fid, type, block_number, extract(epoch FROM block_timestamp)::int8
             FROM onchain_events",
            &[],
        )
        .await?
    {
        state.onchain_events.push(OnchainEventRow {
            chain_id: row.get::<_, i32>(0) as u32,
            tx_hash: hex::encode(row.get::<_, Vec<u8>>(1)),
            log_index: row.get::<_, i32>(2) as u32,
            fid: row.get::<_, i64>(3) as u64,
            event_type: i32::from(row.get::<_, i16>(4)),
            block_number: row.get::<_, i64>(5) as u32,
            block_timestamp: row.get::<_, i64>(6) as u64,
        });
    }

    state.sort();
    Ok(state)
}

/// The numbers of a JSON array column (`mentions`, `mentions_positions`).
pub fn numbers(value: &serde_json::Value) -> Vec<u64> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default()
}

/// The embeds of a cast's `embeds` column (as `store::rows::embeds_json` writes them).
pub fn embeds_from_json(value: &serde_json::Value) -> Vec<EmbedRow> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    if let Some(url) = item.get("url").and_then(serde_json::Value::as_str) {
                        return Some(EmbedRow::Url(url.to_owned()));
                    }
                    let cast = item.get("cast_id")?;
                    Some(EmbedRow::Cast {
                        fid: cast.get("fid")?.as_u64()?,
                        hash: cast.get("hash")?.as_str()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}
