//! Message authenticity: the hash and ed25519 signature every Farcaster message carries.
//!
//! The hashed bytes are `data_bytes` when present and non-empty (always prefer them: the
//! official TypeScript encoder writes empty packed fields that prost omits, so re-encoding
//! `data` does not reproduce them), else the prost encoding of `data`. The hash is the first 20
//! bytes of BLAKE3 over those bytes; the signature is ed25519 over the 20-byte hash, checked
//! strictly (`verify_strict`, as the node does).

use std::borrow::Cow;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message as _;
use waypoint_proto::{HashScheme, Message, MessageData, SignatureScheme};

/// Length of a message hash.
pub const HASH_LEN: usize = 20;

/// Why a message is not authentic. [`VerifyError::as_str`] is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("message has neither data_bytes nor data")]
    MissingData,
    #[error("message data does not decode: {0}")]
    UndecodableData(String),
    #[error("hash scheme {0} is not BLAKE3")]
    BadHashScheme(i32),
    #[error("hash does not match the message data")]
    BadHash,
    #[error("signature scheme {0} is not ED25519")]
    BadSignatureScheme(i32),
    #[error("signer is {0} bytes, not a 32-byte ed25519 public key")]
    BadSigner(usize),
    #[error("signature does not verify against the signer")]
    BadSignature,
}

impl VerifyError {
    /// A stable, bounded label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            VerifyError::MissingData => "missing_data",
            VerifyError::UndecodableData(_) => "undecodable_data",
            VerifyError::BadHashScheme(_) => "bad_hash_scheme",
            VerifyError::BadHash => "bad_hash",
            VerifyError::BadSignatureScheme(_) => "bad_signature_scheme",
            VerifyError::BadSigner(_) => "bad_signer",
            VerifyError::BadSignature => "bad_signature",
        }
    }
}

/// The bytes the hash covers.
pub fn signed_bytes(message: &Message) -> Result<Cow<'_, [u8]>, VerifyError> {
    match (&message.data_bytes, &message.data) {
        (Some(bytes), _) if !bytes.is_empty() => Ok(Cow::Borrowed(bytes)),
        (_, Some(data)) => Ok(Cow::Owned(data.encode_to_vec())),
        _ => Err(VerifyError::MissingData),
    }
}

/// The message's data as hashed: `data_bytes` decoded when present, else `data`.
pub fn message_data(message: &Message) -> Result<MessageData, VerifyError> {
    match (&message.data_bytes, &message.data) {
        (Some(bytes), _) if !bytes.is_empty() => MessageData::decode(bytes.as_slice())
            .map_err(|error| VerifyError::UndecodableData(error.to_string())),
        (_, Some(data)) => Ok(data.clone()),
        _ => Err(VerifyError::MissingData),
    }
}

/// Checks hash scheme, hash, signature scheme, signer and signature.
pub fn verify(message: &Message) -> Result<(), VerifyError> {
    if message.hash_scheme != HashScheme::Blake3 as i32 {
        return Err(VerifyError::BadHashScheme(message.hash_scheme));
    }
    let bytes = signed_bytes(message)?;
    let digest = blake3::hash(&bytes);
    if message.hash.as_slice() != &digest.as_bytes()[..HASH_LEN] {
        return Err(VerifyError::BadHash);
    }
    if message.signature_scheme != SignatureScheme::Ed25519 as i32 {
        return Err(VerifyError::BadSignatureScheme(message.signature_scheme));
    }
    let signer: &[u8; 32] = message
        .signer
        .as_slice()
        .try_into()
        .map_err(|_| VerifyError::BadSigner(message.signer.len()))?;
    let key = verifying_key(signer)?;
    let signature =
        Signature::from_slice(&message.signature).map_err(|_| VerifyError::BadSignature)?;
    key.verify_strict(&message.hash, &signature)
        .map_err(|_| VerifyError::BadSignature)
}

/// Signer keys already decompressed on this thread. A fid signs with a handful of keys, so the
/// same keys come back constantly, and decompressing one costs a large part of a verification.
/// Sized for the signers active at once across many fids (about 200 bytes an entry, so a few
/// MiB per thread); cleared when full.
const SIGNER_CACHE_CAPACITY: usize = 32_768;

thread_local! {
    static SIGNERS: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn verifying_key(signer: &[u8; 32]) -> Result<VerifyingKey, VerifyError> {
    if let Some(key) = SIGNERS.with(|cache| cache.borrow().get(signer).copied()) {
        return Ok(key);
    }
    let key = VerifyingKey::from_bytes(signer).map_err(|_| VerifyError::BadSigner(32))?;
    SIGNERS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= SIGNER_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(*signer, key);
    });
    Ok(key)
}

/// Builds a signed message from `data`: `data_bytes`, BLAKE3 hash, ed25519 signature.
pub fn sign_message(data: MessageData, key: &SigningKey) -> Message {
    let data_bytes = data.encode_to_vec();
    let hash = blake3::hash(&data_bytes).as_bytes()[..HASH_LEN].to_vec();
    let signature = key.sign(&hash).to_bytes().to_vec();
    Message {
        data: Some(data),
        hash,
        hash_scheme: HashScheme::Blake3 as i32,
        signature,
        signature_scheme: SignatureScheme::Ed25519 as i32,
        signer: key.verifying_key().to_bytes().to_vec(),
        data_bytes: Some(data_bytes),
    }
}

#[cfg(test)]
mod tests {
    use waypoint_proto::{CastAddBody, MessageType, message_data};

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn cast(text: &str) -> MessageData {
        MessageData {
            r#type: MessageType::CastAdd as i32,
            fid: 42,
            timestamp: 123_456,
            network: 1,
            body: Some(message_data::Body::CastAddBody(CastAddBody {
                text: text.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_signed_message_verifies_with_and_without_data_bytes() {
        let message = sign_message(cast("hello"), &key());
        assert_eq!(verify(&message), Ok(()));
        assert_eq!(message_data(&message).unwrap().fid, 42);
        // Only `data`: the encoding of data is hashed.
        let without_bytes = Message {
            data_bytes: None,
            ..message.clone()
        };
        assert_eq!(verify(&without_bytes), Ok(()));
        // Only `data_bytes` (data refilled by the reader).
        let without_data = Message {
            data: None,
            ..message
        };
        assert_eq!(verify(&without_data), Ok(()));
        assert_eq!(message_data(&without_data).unwrap().fid, 42);
    }

    #[test]
    fn data_bytes_win_over_data() {
        // data_bytes as a TypeScript encoder writes them: an explicit empty packed field.
        let mut bytes = cast("ts").encode_to_vec();
        let mut body = Vec::new();
        body.extend_from_slice(&[0x12, 0x00]); // mentions: empty packed repeated field 2
        body.extend_from_slice(&[0x22, 0x02, b't', b's']); // text
        bytes.truncate(0);
        MessageData {
            body: None,
            ..cast("")
        }
        .encode(&mut bytes)
        .unwrap();
        bytes.push(0x2a); // field 5 (cast_add_body), length-delimited
        bytes.push(body.len() as u8);
        bytes.extend_from_slice(&body);
        let hash = blake3::hash(&bytes).as_bytes()[..HASH_LEN].to_vec();
        let message = Message {
            data: Some(cast("ts")),
            signature: key().sign(&hash).to_bytes().to_vec(),
            hash,
            hash_scheme: 1,
            signature_scheme: 1,
            signer: key().verifying_key().to_bytes().to_vec(),
            data_bytes: Some(bytes),
        };
        assert_ne!(
            message.data_bytes.as_deref(),
            Some(cast("ts").encode_to_vec().as_slice())
        );
        assert_eq!(
            verify(&message),
            Ok(()),
            "the bytes as sent are what is hashed"
        );
    }

    #[test]
    fn each_corruption_has_its_reason() {
        let good = sign_message(cast("hello"), &key());

        let mut bad_hash = good.clone();
        bad_hash.hash[0] ^= 1;
        assert_eq!(verify(&bad_hash), Err(VerifyError::BadHash));

        let mut bad_scheme = good.clone();
        bad_scheme.hash_scheme = 0;
        assert_eq!(verify(&bad_scheme), Err(VerifyError::BadHashScheme(0)));

        let mut bad_signature = good.clone();
        bad_signature.signature[10] ^= 1;
        assert_eq!(verify(&bad_signature), Err(VerifyError::BadSignature));

        let mut eip712 = good.clone();
        eip712.signature_scheme = 2;
        assert_eq!(verify(&eip712), Err(VerifyError::BadSignatureScheme(2)));

        let mut short_signer = good.clone();
        short_signer.signer.pop();
        assert_eq!(verify(&short_signer), Err(VerifyError::BadSigner(31)));

        let mut other_signer = good.clone();
        other_signer.signer = SigningKey::from_bytes(&[8; 32])
            .verifying_key()
            .to_bytes()
            .to_vec();
        assert_eq!(verify(&other_signer), Err(VerifyError::BadSignature));

        // A non-canonical signature (S not reduced mod l) passes lax checks but not strict ones.
        let mut non_canonical = good.clone();
        non_canonical.signature[63] |= 0xf0;
        assert_eq!(verify(&non_canonical), Err(VerifyError::BadSignature));

        let missing = Message {
            data: None,
            data_bytes: None,
            ..good.clone()
        };
        assert_eq!(verify(&missing), Err(VerifyError::MissingData));

        let garbage = b"\xff\xff\xff not a message".to_vec();
        let hash = blake3::hash(&garbage).as_bytes()[..HASH_LEN].to_vec();
        let undecodable = Message {
            data: None,
            signature: key().sign(&hash).to_bytes().to_vec(),
            hash,
            data_bytes: Some(garbage),
            ..good
        };
        assert_eq!(
            verify(&undecodable),
            Ok(()),
            "authentic bytes, whatever they hold"
        );
        assert!(matches!(
            message_data(&undecodable),
            Err(VerifyError::UndecodableData(_))
        ));
    }
}
