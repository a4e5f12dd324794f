//! Where a hub event goes: which stream publishes it, or why it is skipped or rejected. Shared
//! by the subscribers and the repair actor so live and re-fetched events follow one rule.

use waypoint_proto::{HubEvent, HubEventType, Message, hub_event};

use super::spam::SpamFilter;
use crate::hub::verify;
use crate::streams::{StreamType, UNKNOWN_BUCKET};

/// The event types a subscriber asks for. MERGE_FAILURE is never applied, so it is not
/// requested; BLOCK_CONFIRMED drives gap detection.
pub const SUBSCRIBED: [HubEventType; 6] = [
    HubEventType::MergeMessage,
    HubEventType::PruneMessage,
    HubEventType::RevokeMessage,
    HubEventType::MergeUsernameProof,
    HubEventType::MergeOnChainEvent,
    HubEventType::BlockConfirmed,
];

/// The subscribed types a BLOCK_CONFIRMED count can be checked against (itself excluded).
pub const COUNTED: [HubEventType; 5] = [
    HubEventType::MergeMessage,
    HubEventType::PruneMessage,
    HubEventType::RevokeMessage,
    HubEventType::MergeUsernameProof,
    HubEventType::MergeOnChainEvent,
];

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Append to this stream.
    Publish(StreamType),
    /// Block accounting only.
    BlockConfirmed,
    /// Nothing to store; the cursor may pass it.
    Skip(Skip),
    /// Dead-letter with a reason (`label` is the bounded metrics label).
    Reject {
        bucket: &'static str,
        label: &'static str,
        reason: String,
    },
}

/// Why an event is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The message's FID is labelled spam.
    Spam,
    /// MERGE_FAILURE, channel hints and types Waypoint does not store.
    NotStored,
}

/// Routes a decoded event. `verify_messages` checks every message's hash and signature.
pub fn route(event: &HubEvent, verify_messages: bool, spam: &SpamFilter) -> Route {
    match &event.body {
        Some(hub_event::Body::MergeMessageBody(body)) => {
            message_route(body.message.as_ref(), verify_messages, spam)
        }
        Some(hub_event::Body::PruneMessageBody(body)) => {
            message_route(body.message.as_ref(), verify_messages, spam)
        }
        Some(hub_event::Body::RevokeMessageBody(body)) => {
            message_route(body.message.as_ref(), verify_messages, spam)
        }
        Some(hub_event::Body::MergeUsernameProofBody(body)) => {
            if verify_messages
                && let Some(message) = body.username_proof_message.as_ref()
                && let Err(error) = verify::verify(message)
            {
                return reject(StreamType::UsernameProofs, error);
            }
            Route::Publish(StreamType::UsernameProofs)
        }
        Some(hub_event::Body::MergeOnChainEventBody(_)) => {
            Route::Publish(StreamType::OnchainEvents)
        }
        Some(hub_event::Body::BlockConfirmedBody(_)) => Route::BlockConfirmed,
        Some(hub_event::Body::MergeFailure(_))
        | Some(hub_event::Body::ChannelOwnerChangeHintBody(_)) => Route::Skip(Skip::NotStored),
        None => match HubEventType::try_from(event.r#type) {
            // A known type without its body cannot be applied.
            Ok(
                HubEventType::MergeMessage
                | HubEventType::PruneMessage
                | HubEventType::RevokeMessage,
            ) => Route::Reject {
                bucket: UNKNOWN_BUCKET,
                label: "missing_body",
                reason: format!("event {} of type {} has no body", event.id, event.r#type),
            },
            _ => Route::Skip(Skip::NotStored),
        },
    }
}

fn message_route(message: Option<&Message>, verify_messages: bool, spam: &SpamFilter) -> Route {
    let Some(message) = message else {
        return Route::Reject {
            bucket: UNKNOWN_BUCKET,
            label: "missing_message",
            reason: "message event without a message".into(),
        };
    };
    let data = match verify::message_data(message) {
        Ok(data) => data,
        Err(error) => {
            return Route::Reject {
                bucket: UNKNOWN_BUCKET,
                label: error.as_str(),
                reason: error.to_string(),
            };
        }
    };
    let kind = StreamType::for_message_type(data.r#type);
    if verify_messages && let Err(error) = verify::verify(message) {
        return reject(kind, error);
    }
    if spam.is_spam(data.fid) {
        return Route::Skip(Skip::Spam);
    }
    Route::Publish(kind)
}

fn reject(kind: StreamType, error: verify::VerifyError) -> Route {
    Route::Reject {
        bucket: kind.as_str(),
        label: error.as_str(),
        reason: error.to_string(),
    }
}
