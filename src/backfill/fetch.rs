//! What a job kind reads from the hub for one FID, and how a page of messages becomes rows:
//! verified like the live path (hash and signature, batched), then turned into a batch for
//! the shared apply rules. Plain code: no actors here.

use waypoint_proto::{Message, OnChainEventType};

use super::queue::JobKind;
use crate::hub::{FidMessages, HubError, verify};
use crate::metrics::{HUB_VERIFICATION_FAILURES_TOTAL, LABEL_REASON};
use crate::store::reconcile::AnswerSet;
use crate::store::rows::Batch;

/// Every on-chain event type a FID can have (GetOnChainEvents answers one type per call).
pub(crate) const ONCHAIN_TYPES: [OnChainEventType; 5] = [
    OnChainEventType::Signer,
    OnChainEventType::SignerMigrated,
    OnChainEventType::IdRegister,
    OnChainEventType::StorageRent,
    OnChainEventType::TierPurchase,
];

/// Every message list of a full backfill, with the set each one answers completely (lend
/// storage and link compact states answer no set the reconciliation checks: lend storage is
/// not modelled, and compact states are applied by their own rule).
const FULL_LISTS: [(FidMessages, Option<AnswerSet>); 7] = [
    (FidMessages::AllCasts, Some(AnswerSet::Casts)),
    (FidMessages::AllReactions, Some(AnswerSet::Reactions)),
    (FidMessages::AllLinks, Some(AnswerSet::Links)),
    (FidMessages::LinkCompactState, None),
    (
        FidMessages::AllVerifications,
        Some(AnswerSet::Verifications),
    ),
    (FidMessages::AllUserData, Some(AnswerSet::UserData)),
    (FidMessages::AllLendStorage, None),
];

const USER_DATA_LISTS: [(FidMessages, Option<AnswerSet>); 1] =
    [(FidMessages::AllUserData, Some(AnswerSet::UserData))];

/// The message lists a job kind reads.
pub(crate) fn message_lists(kind: JobKind) -> &'static [(FidMessages, Option<AnswerSet>)] {
    match kind {
        JobKind::Full => &FULL_LISTS,
        JobKind::UserData => &USER_DATA_LISTS,
        JobKind::Onchain(_) => &[],
    }
}

/// Whether a job kind reads the FID's username proofs.
pub(crate) fn reads_proofs(kind: JobKind) -> bool {
    matches!(kind, JobKind::Full | JobKind::UserData)
}

/// The on-chain event types a job kind reads.
pub(crate) fn onchain_types(kind: JobKind) -> Vec<i32> {
    match kind {
        JobKind::Full | JobKind::Onchain(None) => {
            ONCHAIN_TYPES.iter().map(|kind| *kind as i32).collect()
        }
        JobKind::Onchain(Some(event_type)) => vec![event_type],
        JobKind::UserData => Vec::new(),
    }
}

/// A page turned into rows.
pub(crate) struct Prepared {
    pub batch: Batch,
    /// Messages that passed verification.
    pub accepted: u64,
    /// Messages rejected, with the reason.
    pub rejected: Vec<(Vec<u8>, verify::VerifyError)>,
}

/// Verifies a page (when `verify_messages`) and turns the good messages into rows. CPU work:
/// call it from `spawn_blocking`.
pub(crate) fn prepare(page: &[Message], verify_messages: bool, store_messages: bool) -> Prepared {
    let verdicts = if verify_messages {
        let messages: Vec<&Message> = page.iter().collect();
        verify::verify_all(&messages)
    } else {
        vec![Ok(()); page.len()]
    };
    let mut batch = Batch::default();
    let mut accepted = 0;
    let mut rejected = Vec::new();
    for (index, (message, verdict)) in page.iter().zip(verdicts).enumerate() {
        match verdict {
            Ok(()) => {
                batch.add_message(index, message, store_messages);
                accepted += 1;
            }
            Err(error) => {
                metrics::counter!(HUB_VERIFICATION_FAILURES_TOTAL, LABEL_REASON => error.as_str())
                    .increment(1);
                rejected.push((message.hash.clone(), error));
            }
        }
    }
    Prepared {
        batch,
        accepted,
        rejected,
    }
}

/// Whether a hub error about one FID is final: the hub refuses the request itself (NOT_FOUND,
/// INVALID_ARGUMENT), so asking again cannot help. Everything else may pass, or is a problem
/// of the hub or of the configuration that an operator fixes and the job's next attempt
/// outlives (an answer too large is retried with smaller pages first, see the worker).
pub(crate) fn is_final(error: &HubError) -> bool {
    matches!(
        error,
        HubError::Status {
            code: tonic::Code::NotFound | tonic::Code::InvalidArgument,
            ..
        }
    )
}

/// Whether `list` may be missing on a hub (an older node, a proxy that does not pass it):
/// lend storage is not modelled by the replica, so a hub without it loses nothing.
pub(crate) fn is_optional(list: FidMessages) -> bool {
    list == FidMessages::AllLendStorage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_what_they_name() {
        assert_eq!(message_lists(JobKind::Full).len(), 7);
        assert_eq!(
            message_lists(JobKind::UserData)
                .iter()
                .map(|(list, _)| *list)
                .collect::<Vec<_>>(),
            vec![FidMessages::AllUserData]
        );
        assert!(message_lists(JobKind::Onchain(None)).is_empty());
        assert_eq!(onchain_types(JobKind::Full).len(), 5);
        assert_eq!(onchain_types(JobKind::Onchain(Some(3))), vec![3]);
        assert!(onchain_types(JobKind::UserData).is_empty());
        assert!(reads_proofs(JobKind::UserData) && !reads_proofs(JobKind::Onchain(None)));
    }

    #[test]
    fn refusals_are_final_and_outages_are_not() {
        let status = |code| HubError::Status {
            method: "GetAllCastMessagesByFid",
            code,
            message: String::new(),
        };
        assert!(is_final(&status(tonic::Code::NotFound)));
        assert!(is_final(&status(tonic::Code::InvalidArgument)));
        assert!(!is_final(&status(tonic::Code::Unavailable)));
        assert!(!is_final(&status(tonic::Code::ResourceExhausted)));
        assert!(!is_final(&status(tonic::Code::Internal)));
        assert!(!is_final(&HubError::Deadline {
            method: "GetFids",
            seconds: 1
        }));
        assert!(!is_final(&status(tonic::Code::Unimplemented)));
        assert!(!is_final(&HubError::TooLarge {
            method: "GetAllCastMessagesByFid",
            limit: 1,
            message: String::new()
        }));
        assert!(is_optional(FidMessages::AllLendStorage) && !is_optional(FidMessages::AllCasts));
    }
}
