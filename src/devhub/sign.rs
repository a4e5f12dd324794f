//! Keys and signatures of the dev hub: every fid gets an ed25519 key derived from the dataset
//! seed, and every message is hashed and signed the way a Farcaster client does it
//! (hash = first 20 bytes of BLAKE3 over `data_bytes`, ed25519 signature over that hash).
//! Also the deliberately broken variants used by fault injection.

use ed25519_dalek::{Signer, SigningKey};
use prost::Message as _;
use waypoint_proto::{HashScheme, Message, MessageData, SignatureScheme};

/// Length of a Farcaster message hash.
pub const HASH_LEN: usize = 20;

/// A message hash.
pub type Hash = [u8; HASH_LEN];

/// First 20 bytes of BLAKE3 over `bytes`.
pub fn blake3_20(bytes: &[u8]) -> Hash {
    let digest = blake3::hash(bytes);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(&digest.as_bytes()[..HASH_LEN]);
    out
}

/// 32 bytes derived from the seed and a label, so that every derived value (keys, addresses,
/// transaction hashes) depends only on the seed and never on generation order.
pub fn derive_bytes(seed: u64, label: &str, index: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("waypoint devhub 2025 derive");
    hasher.update(&seed.to_le_bytes());
    hasher.update(label.as_bytes());
    hasher.update(&index.to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// The signing key of a fid for a seed.
pub fn fid_signing_key(seed: u64, fid: u64) -> SigningKey {
    SigningKey::from_bytes(&derive_bytes(seed, "signer", fid))
}

/// A message whose data has been encoded and hashed but not yet signed.
#[derive(Debug, Clone)]
pub struct Unsigned {
    pub data: MessageData,
    pub data_bytes: Vec<u8>,
    pub hash: Hash,
}

impl Unsigned {
    pub fn new(data: MessageData) -> Unsigned {
        let data_bytes = data.encode_to_vec();
        let hash = blake3_20(&data_bytes);
        Unsigned {
            data,
            data_bytes,
            hash,
        }
    }

    /// Signs the hash with `key` and builds the wire message (both `data` and `data_bytes`
    /// set, as a node's replies carry both).
    pub fn sign(self, key: &SigningKey) -> Message {
        let signature = key.sign(&self.hash);
        Message {
            data: Some(self.data),
            hash: self.hash.to_vec(),
            hash_scheme: HashScheme::Blake3 as i32,
            signature: signature.to_bytes().to_vec(),
            signature_scheme: SignatureScheme::Ed25519 as i32,
            signer: key.verifying_key().to_bytes().to_vec(),
            data_bytes: Some(self.data_bytes),
        }
    }
}

/// Signs `data` with `key`.
pub fn sign(data: MessageData, key: &SigningKey) -> Message {
    Unsigned::new(data).sign(key)
}

/// The message with a hash that does not match its data (the signature is valid over the
/// wrong hash, so only the hash check can catch it).
pub fn with_bad_hash(message: &Message, key: &SigningKey) -> Message {
    let mut broken = message.clone();
    let mut hash = broken.hash.clone();
    if let Some(first) = hash.first_mut() {
        *first ^= 0xff;
    }
    broken.signature = key.sign(&hash).to_bytes().to_vec();
    broken.hash = hash;
    broken
}

/// The message with a signature that does not verify (the hash is right).
pub fn with_bad_signature(message: &Message) -> Message {
    let mut broken = message.clone();
    if let Some(byte) = broken.signature.get_mut(10) {
        *byte ^= 0x5a;
    }
    broken
}

/// A message whose `data_bytes` are not a MessageData (garbage that fails to decode), with a
/// hash and signature that match the garbage and `data` absent.
pub fn undecodable(garbage: &[u8], key: &SigningKey) -> Message {
    let hash = blake3_20(garbage);
    Message {
        data: None,
        hash: hash.to_vec(),
        hash_scheme: HashScheme::Blake3 as i32,
        signature: key.sign(&hash).to_bytes().to_vec(),
        signature_scheme: SignatureScheme::Ed25519 as i32,
        signer: key.verifying_key().to_bytes().to_vec(),
        data_bytes: Some(garbage.to_vec()),
    }
}

/// Bytes that no protobuf decoder accepts as a MessageData: a field header with wire type 7
/// (which does not exist) followed by noise.
pub fn garbage_bytes(noise: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x0f, 0xff, 0xff];
    bytes.extend_from_slice(noise);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, VerifyingKey};
    use waypoint_proto::MessageType;

    fn verify(message: &Message) -> bool {
        let Some(bytes) = message.data_bytes.as_ref() else {
            return false;
        };
        if blake3_20(bytes).as_slice() != message.hash.as_slice() {
            return false;
        }
        let Ok(key_bytes) = <[u8; 32]>::try_from(message.signer.as_slice()) else {
            return false;
        };
        let Ok(sig_bytes) = <[u8; 64]>::try_from(message.signature.as_slice()) else {
            return false;
        };
        let Ok(key) = VerifyingKey::from_bytes(&key_bytes) else {
            return false;
        };
        key.verify_strict(&message.hash, &Signature::from_bytes(&sig_bytes))
            .is_ok()
    }

    fn sample() -> MessageData {
        MessageData {
            r#type: MessageType::CastAdd as i32,
            fid: 7,
            timestamp: 100,
            network: 1,
            body: None,
        }
    }

    #[test]
    fn signed_messages_verify_and_broken_ones_do_not() {
        let key = fid_signing_key(7, 1);
        let message = sign(sample(), &key);
        assert!(verify(&message));
        assert!(!verify(&with_bad_hash(&message, &key)));
        assert!(!verify(&with_bad_signature(&message)));
        let garbage = undecodable(&garbage_bytes(b"noise"), &key);
        assert!(verify(&garbage));
        assert!(MessageData::decode(garbage.data_bytes.as_deref().unwrap_or_default()).is_err());
    }

    #[test]
    fn keys_depend_on_seed_and_fid_only() {
        assert_eq!(
            fid_signing_key(7, 1).to_bytes(),
            fid_signing_key(7, 1).to_bytes()
        );
        assert_ne!(
            fid_signing_key(7, 1).to_bytes(),
            fid_signing_key(8, 1).to_bytes()
        );
        assert_ne!(
            fid_signing_key(7, 1).to_bytes(),
            fid_signing_key(7, 2).to_bytes()
        );
    }
}
