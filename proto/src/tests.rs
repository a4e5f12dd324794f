//! Wire checks: the field numbers that matter to Waypoint, read back from raw bytes.

use prost::Message as _;

use super::*;

/// Splits an encoded message into (field number, wire type, payload) triples, top level only.
fn fields(mut bytes: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[0];
            *bytes = &bytes[1..];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        let number = (key >> 3) as u32;
        let wire = (key & 7) as u8;
        let payload = match wire {
            0 => varint(&mut bytes).to_le_bytes().to_vec(),
            2 => {
                let len = varint(&mut bytes) as usize;
                let (head, tail) = bytes.split_at(len);
                bytes = tail;
                head.to_vec()
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((number, wire, payload));
    }
    out
}

#[test]
fn message_data_bytes_is_field_7_and_hash_field_2() {
    let message = Message {
        hash: vec![1; 20],
        data_bytes: Some(vec![9, 9, 9]),
        ..Default::default()
    };
    let wire = fields(&message.encode_to_vec());
    assert!(wire.contains(&(2, 2, vec![1; 20])));
    assert!(wire.contains(&(7, 2, vec![9, 9, 9])));
}

#[test]
fn empty_data_bytes_is_still_sent_because_it_is_optional() {
    let message = Message {
        data_bytes: Some(Vec::new()),
        ..Default::default()
    };
    assert_eq!(fields(&message.encode_to_vec()), vec![(7, 2, Vec::new())]);
}

#[test]
fn hub_event_envelope_field_numbers() {
    let event = HubEvent {
        r#type: HubEventType::BlockConfirmed as i32,
        id: 5,
        block_number: 77,
        shard_index: 2,
        timestamp: 1000,
        body: Some(hub_event::Body::BlockConfirmedBody(BlockConfirmedBody {
            block_number: 77,
            total_events: 3,
            event_counts_by_type: [(11, 1), (1, 2)].into_iter().collect(),
            ..Default::default()
        })),
    };
    let wire = fields(&event.encode_to_vec());
    let mut numbers: Vec<u32> = wire.iter().map(|(number, _, _)| *number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2, 12, 14, 15, 16]);
    let (_, _, body) = wire.iter().find(|(number, _, _)| *number == 16).unwrap();
    let body_fields = fields(body);
    // map<int32, uint64> is a repeated field 6 of (key=1, value=2) entries.
    let entries: Vec<_> = body_fields.iter().filter(|(n, _, _)| *n == 6).collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        event,
        HubEvent::decode(event.encode_to_vec().as_slice()).unwrap()
    );
}

#[test]
fn unknown_enum_values_and_message_types_decode() {
    let data = MessageData {
        r#type: 99,
        fid: 1,
        network: 42,
        ..Default::default()
    };
    let decoded = MessageData::decode(data.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded.r#type, 99);
    assert!(MessageType::try_from(decoded.r#type).is_err());

    // A body this subset does not know (field 30) is skipped, not an error.
    let mut bytes = data.encode_to_vec();
    // key = (30 << 3) | 2 = 242, a two-byte varint.
    bytes.extend_from_slice(&[0xf2, 0x01, 2, 0xde, 0xad]);
    let decoded = MessageData::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded.fid, 1);
    assert!(decoded.body.is_none());

    let event = HubEvent {
        r#type: 200,
        ..Default::default()
    };
    let decoded = HubEvent::decode(event.encode_to_vec().as_slice()).unwrap();
    assert!(HubEventType::try_from(decoded.r#type).is_err());
}

#[test]
fn message_bodies_use_the_node_field_numbers() {
    let cases: Vec<(message_data::Body, u32)> = vec![
        (message_data::Body::CastAddBody(CastAddBody::default()), 5),
        (
            message_data::Body::CastRemoveBody(CastRemoveBody::default()),
            6,
        ),
        (message_data::Body::ReactionBody(ReactionBody::default()), 7),
        (
            message_data::Body::VerificationAddAddressBody(Default::default()),
            9,
        ),
        (
            message_data::Body::VerificationRemoveBody(Default::default()),
            10,
        ),
        (
            message_data::Body::UserDataBody(UserDataBody::default()),
            12,
        ),
        (message_data::Body::LinkBody(LinkBody::default()), 14),
        (
            message_data::Body::UsernameProofBody(UserNameProof::default()),
            15,
        ),
        (
            message_data::Body::LinkCompactStateBody(Default::default()),
            17,
        ),
        (message_data::Body::LendStorageBody(Default::default()), 18),
        (message_data::Body::KeyAddBody(Default::default()), 19),
        (message_data::Body::KeyRemoveBody(Default::default()), 20),
    ];
    for (body, number) in cases {
        let data = MessageData {
            body: Some(body),
            ..Default::default()
        };
        let wire = fields(&data.encode_to_vec());
        assert_eq!(wire.len(), 1);
        assert_eq!(wire[0].0, number);
    }
}
