//! Fresh planner statistics for tables that grow fast.
//!
//! The apply statements join batches of a few hundred keys against the tables. With no
//! statistics (a new database, or autovacuum off or not yet run — it wakes once a minute,
//! while a catch-up adds thousands of rows a second), PostgreSQL guesses that an `= ANY` list
//! matches a large part of the table, and scans the whole table once per batch: a cost that
//! grows with the table and slows a catch-up to a crawl. So the writers count the rows they
//! write, and a table is `ANALYZE`d in the background whenever it has grown by half since its
//! last statistics (at least [`MIN_GROWTH`] rows): a dozen or so runs per table on the way to
//! millions of rows, each sampling a bounded number of rows.
//!
//! Only the columns the apply statements look rows up by, and those the read queries filter on
//! (`query::db`: mentions, parents, targets, liveness, time), are analyzed ([`key_columns`]):
//! the wide ones (cast text, embeds) cost most of a whole-table `ANALYZE` (measured: 800 ms a
//! run at 300k casts, an eighth of the database's time during a backfill) and nothing filters
//! on them. Without statistics on `mentions` the planner ignores its GIN index (measured: 29 ms
//! instead of 4 ms for a mention page at 115k casts). The rest is left to autovacuum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::metrics::{LABEL_TABLE, STORE_ANALYZE_RUNS_TOTAL};

/// Fewest new rows worth new statistics.
pub const MIN_GROWTH: u64 = 10_000;

/// Rows written per table since its last statistics, shared by the clones of a pool.
#[derive(Debug, Default, Clone)]
pub(super) struct Growth(Arc<Mutex<HashMap<&'static str, TableGrowth>>>);

#[derive(Debug, Default)]
struct TableGrowth {
    /// Rows written since the last `ANALYZE` started.
    since: u64,
    /// Rows written up to the last `ANALYZE` (a stand-in for the table's size).
    analyzed_at: u64,
    running: bool,
}

impl Growth {
    /// Counts `rows` written to `table`; true when the caller should analyze it now (it is
    /// then marked running until [`Growth::finished`]).
    pub(super) fn note(&self, table: &'static str, rows: u64) -> bool {
        let mut tables = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let growth = tables.entry(table).or_default();
        growth.since += rows;
        let due = growth.since >= MIN_GROWTH.max(growth.analyzed_at / 2);
        if due && !growth.running {
            growth.running = true;
            growth.analyzed_at += growth.since;
            growth.since = 0;
            true
        } else {
            false
        }
    }

    pub(super) fn finished(&self, table: &'static str) {
        let mut tables = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(growth) = tables.get_mut(table) {
            growth.running = false;
        }
    }
}

/// The columns of `table` the apply statements find rows by (None: analyze every column).
fn key_columns(table: &str) -> Option<&'static str> {
    Some(match table {
        "casts" => {
            "hash, fid, parent_hash, root_parent_hash, parent_url, mentions, \"timestamp\", deleted_at"
        }
        "reactions" => {
            "hash, fid, crdt_key, target_cast_hash, target_url, \"timestamp\", deleted_at"
        }
        "links" => "hash, fid, crdt_key, type, target_fid, deleted_at",
        "verifications" => "hash, fid, signer_address",
        "crdt_removes" => "hash, set_kind, fid, crdt_key",
        "user_data" => "fid, type, hash",
        "username_proofs" => "username, fid",
        "onchain_events" => "chain_id, tx_hash, log_index",
        "message_tombstones" => "hash",
        "messages" => "hash",
        _ => return None,
    })
}

/// The `ANALYZE` of `table`'s key columns; None for a name that is not a plain table name.
pub fn analyze_statement(table: &str) -> Option<String> {
    // Table names come from the apply code, never from input; refuse anything else anyway.
    if table.is_empty() || !table.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    Some(match key_columns(table) {
        Some(columns) => format!("ANALYZE {table} ({columns})"),
        None => format!("ANALYZE {table}"),
    })
}

/// Runs `ANALYZE` on `table` with a pooled connection, off the caller's path.
pub(super) fn spawn_analyze(pg: super::Pg, growth: Growth, table: &'static str) {
    let Some(statement) = analyze_statement(table) else {
        growth.finished(table);
        return;
    };
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = async {
            let client = pg.get().await?;
            client.batch_execute(&statement).await?;
            Ok::<_, super::StoreError>(())
        }
        .await;
        growth.finished(table);
        match result {
            Ok(()) => {
                metrics::counter!(STORE_ANALYZE_RUNS_TOTAL, LABEL_TABLE => table).increment(1);
                tracing::debug!(
                    table,
                    ms = started.elapsed().as_millis() as u64,
                    "statistics refreshed"
                );
            }
            Err(error) => {
                tracing::warn!(table, %error, "ANALYZE failed; the planner keeps older statistics")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyzes_after_each_half_of_growth_and_never_twice_at_once() {
        let growth = Growth::default();
        assert!(!growth.note("casts", MIN_GROWTH - 1));
        assert!(
            growth.note("casts", 1),
            "first statistics at MIN_GROWTH rows"
        );
        // Running: more growth does not start a second one.
        assert!(!growth.note("casts", 5 * MIN_GROWTH));
        growth.finished("casts");
        // 5 × MIN_GROWTH written meanwhile, more than the MIN_GROWTH a table of MIN_GROWTH rows
        // needs: due at the next note.
        assert!(growth.note("casts", 0));
        growth.finished("casts");
        // Now at 6 × MIN_GROWTH: the next run after 3 × MIN_GROWTH more.
        assert!(!growth.note("casts", 3 * MIN_GROWTH - 1));
        assert!(growth.note("casts", 1));
        // Tables are counted apart.
        assert!(!growth.note("links", MIN_GROWTH - 1));
    }
}
