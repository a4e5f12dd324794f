//! What a backfill may take out of the live set: rows of one FID that the database holds as
//! live but that the hub's complete answer for that FID no longer contains (pruned, revoked or
//! removed while nobody listened).
//!
//! Only what the answer proves goes: a set counts only when every page of it was read, and a
//! row written or changed since the FID's fetch began ([`fetch_started`], the database's own
//! clock) stays, because the live path may have just added it from an event newer than the
//! answer (a follow → unfollow → refollow must never lose the live follow). The rows found
//! are taken out through the shared apply rules ([`Batch::add_gone`]): a tombstone (reason 3)
//! per message, so a late duplicate of the message stays out too, and a recheck of each keyed
//! set's key.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use tokio_postgres::types::ToSql;

use super::rows::{Batch, RecheckRow, SetKind};

/// The sets a FID's answer covers, as numbered in the reconcile query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnswerSet {
    Casts = 1,
    Reactions = 2,
    Links = 3,
    Verifications = 4,
    UserData = 5,
    UsernameProofs = 6,
}

/// A message hash as the hub gives it (20 bytes of BLAKE3).
type Hash = [u8; 20];

/// What the hub answered for one FID: the sets it answered completely and what they hold.
#[derive(Debug)]
pub struct HubAnswer {
    pub fid: u64,
    /// When the fetch began, by the database's clock.
    pub since: SystemTime,
    complete: Vec<AnswerSet>,
    /// Every message of the answered sets, adds and removes, valid or not (a message the
    /// hub holds proves its row, whatever our verification thought of it).
    hashes: HashSet<Hash>,
    /// Names of the username proofs the hub lists for the FID.
    names: HashSet<String>,
}

impl HubAnswer {
    pub fn new(fid: u64, since: SystemTime) -> HubAnswer {
        HubAnswer {
            fid,
            since,
            complete: Vec::new(),
            hashes: HashSet::new(),
            names: HashSet::new(),
        }
    }

    /// Notes the messages of a page. Only the 20-byte hash is kept, so a FID with hundreds
    /// of thousands of messages costs a few MiB here, never the messages themselves.
    pub fn saw_messages<'a>(&mut self, hashes: impl IntoIterator<Item = &'a [u8]>) {
        self.hashes.extend(
            hashes
                .into_iter()
                .filter_map(|hash| Hash::try_from(hash).ok()),
        );
    }

    /// Notes a username proof the hub lists.
    pub fn saw_name(&mut self, name: String) {
        self.names.insert(name);
    }

    /// Every page of `set` was read.
    pub fn completed(&mut self, set: AnswerSet) {
        if !self.complete.contains(&set) {
            self.complete.push(set);
        }
    }

    /// Whether any set was answered completely.
    pub fn is_empty(&self) -> bool {
        self.complete.is_empty()
    }
}

/// The database's clock now: the `since` of a FID's fetch.
pub async fn fetch_started(
    client: &impl tokio_postgres::GenericClient,
) -> Result<SystemTime, tokio_postgres::Error> {
    let row = client.query_one("SELECT clock_timestamp()", &[]).await?;
    Ok(row.get(0))
}

/// Rows the hub's answer proves gone.
#[derive(Debug, Default)]
pub struct Gone {
    /// For the apply rules.
    pub batch: Batch,
    /// How many, per table.
    pub by_table: BTreeMap<&'static str, u64>,
}

impl Gone {
    pub fn is_empty(&self) -> bool {
        self.by_table.is_empty()
    }
}

/// Table names of the query's set numbers.
const TABLES: [&str; 6] = [
    "casts",
    "reactions",
    "links",
    "verifications",
    "user_data",
    "username_proofs",
];

/// The rows the answer proves gone (empty when none).
pub async fn gone_rows(
    client: &deadpool_postgres::Client,
    answer: &HubAnswer,
) -> Result<Gone, tokio_postgres::Error> {
    let mut gone = Gone::default();
    if answer.complete.is_empty() {
        return Ok(gone);
    }
    let fid = answer.fid as i64;
    let sets: Vec<i16> = answer.complete.iter().map(|set| *set as i16).collect();
    // One statement for every set: live rows of the fid, untouched since the fetch began.
    let statement = client
        .prepare_cached(
            "SELECT 1::int2, hash, NULL::bytea, NULL::text, NULL::int8 FROM casts
              WHERE 1 = ANY($3::int2[]) AND fid = $1 AND deleted_at IS NULL AND updated_at < $2
             UNION ALL
             SELECT 2::int2, hash, crdt_key, NULL, NULL FROM reactions
              WHERE 2 = ANY($3::int2[]) AND fid = $1 AND deleted_at IS NULL AND updated_at < $2
             UNION ALL
             SELECT 3::int2, hash, crdt_key, NULL, NULL FROM links
              WHERE 3 = ANY($3::int2[]) AND fid = $1 AND deleted_at IS NULL AND updated_at < $2
             UNION ALL
             SELECT 4::int2, hash, signer_address, NULL, NULL FROM verifications
              WHERE 4 = ANY($3::int2[]) AND fid = $1 AND deleted_at IS NULL AND updated_at < $2
             UNION ALL
             SELECT 5::int2, hash, NULL, NULL, NULL FROM user_data
              WHERE 5 = ANY($3::int2[]) AND fid = $1 AND deleted_at IS NULL AND updated_at < $2
             UNION ALL
             SELECT 6::int2, NULL, NULL, username, extract(epoch FROM \"timestamp\")::int8
               FROM username_proofs
              WHERE 6 = ANY($3::int2[]) AND fid = $1 AND deleted_at IS NULL AND updated_at < $2",
        )
        .await?;
    let params: [&(dyn ToSql + Sync); 3] = [&fid, &answer.since, &sets];
    // Streamed: a FID with a very large history is compared row by row, not collected.
    let rows = client.query_raw(&statement, params).await?;
    futures::pin_mut!(rows);
    let at = unix_now();
    while let Some(row) = rows.try_next().await? {
        let set: i16 = row.get(0);
        let table = TABLES[usize::try_from(set - 1).unwrap_or(0).min(TABLES.len() - 1)];
        if set == AnswerSet::UsernameProofs as i16 {
            let name: String = row.get(3);
            if !answer.names.contains(&name) {
                gone.batch.add_proof_gone(name, fid, row.get(4), at);
                *gone.by_table.entry(table).or_default() += 1;
            }
            continue;
        }
        let hash: Vec<u8> = row.get(1);
        let held = Hash::try_from(hash.as_slice()).is_ok_and(|hash| answer.hashes.contains(&hash));
        if held {
            continue;
        }
        let keyed = match set {
            2 => Some(SetKind::Reaction),
            3 => Some(SetKind::Link),
            4 => Some(SetKind::Verification),
            _ => None,
        };
        let recheck = keyed.map(|set_kind| RecheckRow {
            set_kind,
            fid,
            key: row.get(2),
        });
        gone.batch.add_gone(hash, at, recheck);
        *gone.by_table.entry(table).or_default() += 1;
    }
    Ok(gone)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_twenty_byte_hashes_are_kept() {
        let mut answer = HubAnswer::new(1, SystemTime::UNIX_EPOCH);
        let good = [7u8; 20];
        answer.saw_messages([good.as_slice(), [1u8; 3].as_slice()]);
        assert_eq!(answer.hashes.len(), 1);
        assert!(answer.hashes.contains(&good));
        assert!(answer.is_empty(), "no set answered yet");
        answer.completed(AnswerSet::Casts);
        answer.completed(AnswerSet::Casts);
        assert_eq!(answer.complete, vec![AnswerSet::Casts]);
    }
}
