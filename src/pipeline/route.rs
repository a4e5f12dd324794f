//! Where a hub event goes: which stream publishes it, or why it is skipped or rejected. Shared
//! by the subscribers and the repair actor so live and re-fetched events follow one rule.

use waypoint_proto::{HubEvent, HubEventType, Message, hub_event};

use crate::hub::verify::{self, VerifyError};
use crate::spam::SpamFilter;
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
    let verdict = if verify_messages {
        signed_message(event).map(verify::verify)
    } else {
        None
    };
    route_checked(event, verdict, spam)
}

/// [`route`] for a batch of decoded events (decoding failures pass through untouched), with
/// the signatures of all their messages checked together ([`verify::verify_all`], about a
/// third of the cost of checking them one by one).
pub fn route_all<E>(
    events: Vec<Result<HubEvent, E>>,
    verify_messages: bool,
    spam: &SpamFilter,
) -> Vec<Result<(HubEvent, Route), E>> {
    let verdicts: Vec<Option<Result<(), VerifyError>>> = if verify_messages {
        let signed: Vec<Option<&Message>> = events
            .iter()
            .map(|event| event.as_ref().ok().and_then(signed_message))
            .collect();
        let present: Vec<&Message> = signed.iter().flatten().copied().collect();
        let mut checked = verify::verify_all(&present).into_iter();
        signed
            .iter()
            .map(|message| {
                // One verdict per message; a missing one fails closed.
                message.map(|_| checked.next().unwrap_or(Err(VerifyError::BadSignature)))
            })
            .collect()
    } else {
        vec![None; events.len()]
    };
    events
        .into_iter()
        .zip(verdicts)
        .map(|(event, verdict)| {
            event.map(|event| {
                let route = route_checked(&event, verdict, spam);
                (event, route)
            })
        })
        .collect()
}

/// The message an event carries a signature for, if any.
fn signed_message(event: &HubEvent) -> Option<&Message> {
    match &event.body {
        Some(hub_event::Body::MergeMessageBody(body)) => body.message.as_ref(),
        Some(hub_event::Body::PruneMessageBody(body)) => body.message.as_ref(),
        Some(hub_event::Body::RevokeMessageBody(body)) => body.message.as_ref(),
        Some(hub_event::Body::MergeUsernameProofBody(body)) => body.username_proof_message.as_ref(),
        _ => None,
    }
}

/// Routes an event whose message, if it has one, was verified already (`None`: not checked).
fn route_checked(
    event: &HubEvent,
    verdict: Option<Result<(), VerifyError>>,
    spam: &SpamFilter,
) -> Route {
    match &event.body {
        Some(hub_event::Body::MergeMessageBody(body)) => {
            message_route(body.message.as_ref(), verdict, spam)
        }
        Some(hub_event::Body::PruneMessageBody(body)) => {
            message_route(body.message.as_ref(), verdict, spam)
        }
        Some(hub_event::Body::RevokeMessageBody(body)) => {
            message_route(body.message.as_ref(), verdict, spam)
        }
        Some(hub_event::Body::MergeUsernameProofBody(_)) => {
            if let Some(Err(error)) = verdict {
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

fn message_route(
    message: Option<&Message>,
    verdict: Option<Result<(), VerifyError>>,
    spam: &SpamFilter,
) -> Route {
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
    if let Some(Err(error)) = verdict {
        return reject(kind, error);
    }
    if spam.is_spam(data.fid) {
        return Route::Skip(Skip::Spam);
    }
    Route::Publish(kind)
}

fn reject(kind: StreamType, error: VerifyError) -> Route {
    Route::Reject {
        bucket: kind.as_str(),
        label: error.as_str(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use waypoint_proto::{
        BlockConfirmedBody, CastAddBody, MergeMessageBody, MessageData, MessageType, message_data,
    };

    use super::*;
    use crate::hub::verify::sign_message;

    fn cast(fid: u64, text: &str) -> Message {
        let data = MessageData {
            r#type: MessageType::CastAdd as i32,
            fid,
            timestamp: 1,
            network: 1,
            body: Some(message_data::Body::CastAddBody(CastAddBody {
                text: text.into(),
                ..Default::default()
            })),
        };
        sign_message(data, &SigningKey::from_bytes(&[fid as u8; 32]))
    }

    fn merge(id: u64, message: Message) -> HubEvent {
        HubEvent {
            id,
            r#type: HubEventType::MergeMessage as i32,
            body: Some(hub_event::Body::MergeMessageBody(MergeMessageBody {
                message: Some(message),
                deleted_messages: Vec::new(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_routes_every_event_as_it_would_alone() {
        let mut bad_signature = cast(2, "forged");
        bad_signature.signature[5] ^= 1;
        let mut bad_hash = cast(3, "edited");
        bad_hash.hash[0] ^= 1;
        let block = HubEvent {
            id: 5,
            r#type: HubEventType::BlockConfirmed as i32,
            body: Some(hub_event::Body::BlockConfirmedBody(
                BlockConfirmedBody::default(),
            )),
            ..Default::default()
        };
        let events: Vec<Result<HubEvent, &str>> = vec![
            Ok(merge(1, cast(1, "good"))),
            Ok(merge(2, bad_signature)),
            Ok(merge(3, bad_hash)),
            Err("undecodable"),
            Ok(block),
        ];
        let spam = SpamFilter::default();

        let routed = route_all(events.clone(), true, &spam);
        assert_eq!(routed.len(), events.len());
        for (event, routed) in events.iter().zip(&routed) {
            match (event, routed) {
                (Ok(event), Ok((same, route))) => {
                    assert_eq!(same, event);
                    assert_eq!(
                        route,
                        &super::route(event, true, &spam),
                        "event {}",
                        event.id
                    );
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                other => panic!("decoding outcome changed: {other:?}"),
            }
        }
        let labels: Vec<&str> = routed
            .iter()
            .map(|routed| match routed {
                Ok((_, Route::Publish(StreamType::Casts))) => "casts",
                Ok((_, Route::Reject { label, .. })) => label,
                Ok((_, Route::BlockConfirmed)) => "block",
                Err(_) => "undecodable",
                Ok((_, other)) => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            labels,
            ["casts", "bad_signature", "bad_hash", "undecodable", "block"]
        );

        // Without verification nothing is checked.
        let unchecked = route_all(events, false, &spam);
        assert!(matches!(
            unchecked[1],
            Ok((_, Route::Publish(StreamType::Casts)))
        ));
    }
}
