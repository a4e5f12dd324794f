//! Fault injection: the ways a real node (or the network in front of it) misbehaves, switched on
//! by `DevHubArgs` flags or at runtime through `DevHubHandle::set_faults`.
//!
//! Two kinds of faults:
//! - stream faults act per Subscribe call and leave the hub's log alone (cut streams, drop or
//!   duplicate events);
//! - content faults change what the live generator commits (broken messages, prunes, revokes,
//!   merge failures, link compact states) or what the log retains. Those that change the store
//!   (prune, revoke, compact state) are reflected in `dump_state`.
//!
//! Rates are probabilities in 0.0..=1.0; 1.0 makes a fault deterministic, which is what tests use.

use rand::Rng;

/// Every fault the dev hub can inject. `Faults::default()` is a well-behaved node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Close every Subscribe stream after this many events were sent on it, as a node restart
    /// would.
    pub cut_subscribe_after: Option<u64>,
    /// When a stream is cut: end it cleanly (true) instead of with an UNAVAILABLE status
    /// (false, the default: what a client sees when the connection breaks).
    pub cut_cleanly: bool,
    /// Fraction of live events each subscriber silently misses (the stream stays open;
    /// BLOCK_CONFIRMED is never dropped, so its counts reveal the gap).
    pub drop_rate: f64,
    /// Live events, BLOCK_CONFIRMED included, are not sent: each stream stays open and silent,
    /// like a node that stopped committing blocks or a stuck proxy. What a subscriber misses
    /// meanwhile only comes back by subscribing again.
    pub stall_live: bool,
    /// Fraction of events (replayed or live) a subscriber receives twice in a row.
    pub duplicate_rate: f64,
    /// Fraction of live messages emitted with a hash that does not match `data_bytes`.
    pub bad_hash_rate: f64,
    /// Fraction of live messages emitted with a signature that does not verify.
    pub bad_signature_rate: f64,
    /// Fraction of live messages emitted with `data_bytes` that are not a MessageData.
    pub undecodable_rate: f64,
    /// Fraction of live steps that prune one stored message (PRUNE_MESSAGE) instead.
    pub prune_rate: f64,
    /// Fraction of live steps that revoke one stored message (REVOKE_MESSAGE) instead.
    pub revoke_rate: f64,
    /// Fraction of live steps that emit a MERGE_FAILURE (the store is unchanged).
    pub merge_failure_rate: f64,
    /// Fraction of live steps that emit a LINK_COMPACT_STATE for a fid that follows someone.
    pub compact_state_rate: f64,
    /// Keep only the newest this-many blocks of each shard's event log; older events are gone
    /// from GetEvents and Subscribe replay, as after the node's retention job.
    pub event_retention_blocks: Option<u64>,
    /// Every per-FID read of these FIDs answers UNAVAILABLE, as a shard that is down would.
    pub unavailable_fids: Vec<u64>,
    /// Every per-FID read of these FIDs answers NOT_FOUND.
    pub not_found_fids: Vec<u64>,
    /// Requests beyond this many per second (over the whole server) are refused with
    /// RESOURCE_EXHAUSTED, as a hosted hub's rate limit does.
    pub rate_limit_per_second: Option<u32>,
}

impl Faults {
    /// Checks that every rate is a probability.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("drop_rate", self.drop_rate),
            ("duplicate_rate", self.duplicate_rate),
            ("bad_hash_rate", self.bad_hash_rate),
            ("bad_signature_rate", self.bad_signature_rate),
            ("undecodable_rate", self.undecodable_rate),
            ("prune_rate", self.prune_rate),
            ("revoke_rate", self.revoke_rate),
            ("merge_failure_rate", self.merge_failure_rate),
            ("compact_state_rate", self.compact_state_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if self.cut_subscribe_after == Some(0) {
            return Err("cut_subscribe_after must be at least 1".to_string());
        }
        if self.event_retention_blocks == Some(0) {
            return Err("event_retention_blocks must be at least 1".to_string());
        }
        if self.rate_limit_per_second == Some(0) {
            return Err("rate_limit_per_second must be at least 1".to_string());
        }
        Ok(())
    }

    /// The status a per-FID read of `fid` answers instead of its data, if any.
    pub(crate) fn fid_status(&self, fid: u64) -> Option<tonic::Status> {
        if self.unavailable_fids.contains(&fid) {
            Some(tonic::Status::unavailable(format!(
                "shard store for fid {fid} is unavailable"
            )))
        } else if self.not_found_fids.contains(&fid) {
            Some(tonic::Status::not_found(format!("fid {fid} not found")))
        } else {
            None
        }
    }

    /// The step the live generator takes instead of a plain message, if any.
    pub(crate) fn pick_step(&self, rng: &mut impl Rng) -> LiveStep {
        let roll: f64 = rng.random();
        let mut edge = 0.0;
        let steps = [
            (self.prune_rate, LiveStep::Prune),
            (self.revoke_rate, LiveStep::Revoke),
            (self.merge_failure_rate, LiveStep::MergeFailure),
            (self.compact_state_rate, LiveStep::CompactState),
        ];
        for (rate, step) in steps {
            edge += rate;
            if rate > 0.0 && roll < edge {
                return step;
            }
        }
        LiveStep::Message
    }

    /// How a freshly generated live message is corrupted, if at all.
    pub(crate) fn pick_corruption(&self, rng: &mut impl Rng) -> Option<Corruption> {
        let roll: f64 = rng.random();
        let mut edge = 0.0;
        let kinds = [
            (self.bad_hash_rate, Corruption::BadHash),
            (self.bad_signature_rate, Corruption::BadSignature),
            (self.undecodable_rate, Corruption::Undecodable),
        ];
        for (rate, kind) in kinds {
            edge += rate;
            if rate > 0.0 && roll < edge {
                return Some(kind);
            }
        }
        None
    }
}

/// One step of the live generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LiveStep {
    Message,
    Prune,
    Revoke,
    MergeFailure,
    CompactState,
}

/// A way to break a message on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Corruption {
    BadHash,
    BadSignature,
    Undecodable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn rates_of_one_always_fire_and_zero_never() {
        let mut rng = StdRng::seed_from_u64(1);
        let faults = Faults {
            revoke_rate: 1.0,
            ..Faults::default()
        };
        for _ in 0..100 {
            assert_eq!(faults.pick_step(&mut rng), LiveStep::Revoke);
            assert_eq!(faults.pick_corruption(&mut rng), None);
        }
        let faults = Faults {
            undecodable_rate: 1.0,
            ..Faults::default()
        };
        for _ in 0..100 {
            assert_eq!(faults.pick_step(&mut rng), LiveStep::Message);
            assert_eq!(
                faults.pick_corruption(&mut rng),
                Some(Corruption::Undecodable)
            );
        }
    }

    #[test]
    fn invalid_rates_are_named() {
        let faults = Faults {
            drop_rate: 1.5,
            ..Faults::default()
        };
        let error = faults.validate().unwrap_err();
        assert!(error.contains("drop_rate"), "{error}");
        assert!(Faults::default().validate().is_ok());
    }
}
