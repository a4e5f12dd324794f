//! Message authenticity: the hash and ed25519 signature every Farcaster message carries.
//!
//! The hashed bytes are `data_bytes` when present and non-empty (always prefer them: the
//! official TypeScript encoder writes empty packed fields that prost omits, so re-encoding
//! `data` does not reproduce them), else the prost encoding of `data`. The hash is the first 20
//! bytes of BLAKE3 over those bytes; the signature is ed25519 over the 20-byte hash.
//!
//! # The acceptance rule
//!
//! A signature `(R, s)` by signer `A` over hash `M` is accepted when
//! - `s` is canonical (below the group order), `R` is a canonical point encoding, and neither
//!   `R` nor `A` is a point of small order — the same rejections as `verify_strict`, which the
//!   node uses;
//! - `[8]([s]B − R − [k]A)` is the identity, with `k = SHA-512(R ‖ A ‖ M) mod ℓ`.
//!
//! The equation is the cofactored one. It holds for every signature `verify_strict` accepts,
//! and differs from it only for a signature whose `R` or `A` carries a small-order component
//! next to its prime-order part: such a signature can only be made with the signer's private
//! key and is never merged (so never sent) by a node. The cofactored equation is what lets
//! many signatures be checked in one multi-scalar multiplication ([`verify_all`]) with the
//! same answer as checking each alone, whatever the batch holds; see docs/design.md
//! ("Signature verification").

use std::borrow::Cow;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, Signer, SigningKey};
use prost::Message as _;
use sha2::{Digest, Sha512};
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

/// Checks hash scheme, hash, signature scheme, signer and signature of one message.
pub fn verify(message: &Message) -> Result<(), VerifyError> {
    if equation(message)?.holds() {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// [`verify`] for many messages: one verdict per message, in order, each the same as
/// [`verify`] would give. The signature equations are checked together, a group at a time,
/// which costs about a third of checking them one by one; a group that does not hold is split
/// until the failing messages are found, so one bad message costs a few more group checks and
/// leaves the others accepted.
pub fn verify_all(messages: &[&Message]) -> Vec<Result<(), VerifyError>> {
    let mut verdicts = Vec::with_capacity(messages.len());
    let mut pending = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        match equation(message) {
            Ok(equation) => {
                pending.push((index, equation));
                verdicts.push(Ok(()));
            }
            Err(error) => verdicts.push(Err(error)),
        }
    }
    for group in pending.chunks(GROUP) {
        for index in failing(group) {
            verdicts[index] = Err(VerifyError::BadSignature);
        }
    }
    verdicts
}

/// Equations checked in one multi-scalar multiplication. Measured on the development machine:
/// about 17 µs a signature for groups of 128 to 1,024 (one `verify_strict` takes 54 µs there);
/// a bound keeps the work redone when a group fails small.
const GROUP: usize = 256;

/// Below this size a failing group is checked one equation at a time rather than split.
const SPLIT_FLOOR: usize = 4;

/// The indices of the equations in `group` that do not hold.
fn failing(group: &[(usize, Equation)]) -> Vec<usize> {
    if all_hold(group.iter().map(|(_, equation)| equation)) {
        return Vec::new();
    }
    if group.len() <= SPLIT_FLOOR {
        return group
            .iter()
            .filter(|(_, equation)| !equation.holds())
            .map(|(index, _)| *index)
            .collect();
    }
    let (left, right) = group.split_at(group.len() / 2);
    let mut bad = failing(left);
    bad.extend(failing(right));
    bad
}

/// One signature equation, with everything that can be rejected without it already checked.
struct Equation {
    s: Scalar,
    r: EdwardsPoint,
    a: EdwardsPoint,
    k: Scalar,
}

impl Equation {
    /// `[8]([s]B − R − [k]A) = 0`.
    fn holds(&self) -> bool {
        let sb_minus_ka =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-self.a, &self.s);
        (sb_minus_ka - self.r).mul_by_cofactor().is_identity()
    }
}

/// Whether every equation holds, checked as one random linear combination:
/// `[8]([Σ zᵢsᵢ]B − Σ zᵢRᵢ − Σ (zᵢkᵢ)Aᵢ) = 0` with secret random 128-bit `zᵢ`. If any equation
/// fails, the combination holds with probability at most 2⁻¹²⁸, whatever the inputs.
fn all_hold<'a>(equations: impl ExactSizeIterator<Item = &'a Equation> + Clone) -> bool {
    let n = equations.len();
    if n <= 1 {
        return equations.into_iter().all(Equation::holds);
    }
    let weights: Vec<Scalar> = (0..n)
        .map(|_| Scalar::from(rand::random::<u128>()))
        .collect();
    let basepoint: Scalar = equations
        .clone()
        .zip(&weights)
        .map(|(equation, z)| z * equation.s)
        .sum();
    let scalars = std::iter::once(basepoint)
        .chain(weights.iter().map(|z| -z))
        .chain(
            equations
                .clone()
                .zip(&weights)
                .map(|(equation, z)| -(z * equation.k)),
        );
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(equations.clone().map(|equation| equation.r))
        .chain(equations.map(|equation| equation.a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// Every check but the signature equation, and the equation's terms.
fn equation(message: &Message) -> Result<Equation, VerifyError> {
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
    let a = signer_point(signer)?;
    let signature =
        Signature::from_slice(&message.signature).map_err(|_| VerifyError::BadSignature)?;
    let r_bytes = *signature.r_bytes();
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes()))
        .ok_or(VerifyError::BadSignature)?;
    if !canonical_y(&r_bytes) {
        return Err(VerifyError::BadSignature);
    }
    let r = CompressedEdwardsY(r_bytes)
        .decompress()
        .ok_or(VerifyError::BadSignature)?;
    if r.is_small_order() {
        return Err(VerifyError::BadSignature);
    }
    let mut challenge = Sha512::new();
    challenge.update(r_bytes);
    challenge.update(signer);
    challenge.update(&message.hash);
    let k = Scalar::from_bytes_mod_order_wide(&challenge.finalize().into());
    Ok(Equation { s, r, a, k })
}

/// Whether the y coordinate of a compressed point is below p = 2²⁵⁵ − 19. Larger values
/// decode (reduced mod p) but are not the point's encoding, and `verify_strict` compares
/// encodings; the x = 0 points whose sign bit could also differ are of small order.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    let high = bytes[31] & 0x7f;
    !(high == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

/// Signer keys already decompressed (and found not to be of small order) on this thread. A fid
/// signs with a handful of keys, so the same keys come back constantly, and decompressing one
/// costs a large part of a verification.
/// Sized for the signers active at once across many fids (about 200 bytes an entry, so a few
/// MiB per thread); cleared when full.
const SIGNER_CACHE_CAPACITY: usize = 32_768;

thread_local! {
    static SIGNERS: std::cell::RefCell<std::collections::HashMap<[u8; 32], EdwardsPoint>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn signer_point(signer: &[u8; 32]) -> Result<EdwardsPoint, VerifyError> {
    if let Some(point) = SIGNERS.with(|cache| cache.borrow().get(signer).copied()) {
        return Ok(point);
    }
    let point = CompressedEdwardsY(*signer)
        .decompress()
        .ok_or(VerifyError::BadSigner(32))?;
    // A small-order key verifies anything; `verify_strict` rejects it as a bad signature.
    if point.is_small_order() {
        return Err(VerifyError::BadSignature);
    }
    SIGNERS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= SIGNER_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(*signer, point);
    });
    Ok(point)
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
    use curve25519_dalek::constants::EIGHT_TORSION;
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

    /// Re-signs `message` with a chosen nonce point: `R = [r]B + extra`, `s = r + k·a`.
    fn signed_with_nonce(message: &Message, nonce: u64, extra: EdwardsPoint) -> Message {
        let key = key();
        let r_point = ED25519_BASEPOINT_POINT * Scalar::from(nonce) + extra;
        let r_bytes = r_point.compress().to_bytes();
        let mut challenge = Sha512::new();
        challenge.update(r_bytes);
        challenge.update(key.verifying_key().to_bytes());
        challenge.update(&message.hash);
        let k = Scalar::from_bytes_mod_order_wide(&challenge.finalize().into());
        let s = Scalar::from(nonce) + k * key.to_scalar();
        let mut signature = r_bytes.to_vec();
        signature.extend_from_slice(s.as_bytes());
        Message {
            signature,
            ..message.clone()
        }
    }

    fn strict(message: &Message) -> bool {
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(message.signer.as_slice().try_into().unwrap());
        let signature = ed25519_dalek::Signature::from_slice(&message.signature);
        matches!((key, signature), (Ok(key), Ok(signature)) if key.verify_strict(&message.hash, &signature).is_ok())
    }

    #[test]
    fn a_batch_names_exactly_its_bad_messages() {
        let keys: Vec<SigningKey> = (1..=5u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let mut messages: Vec<Message> = (0..600)
            .map(|i| sign_message(cast(&format!("cast {i}")), &keys[i % keys.len()]))
            .collect();
        let all: Vec<&Message> = messages.iter().collect();
        assert!(
            verify_all(&all).iter().all(Result::is_ok),
            "600 good messages"
        );

        // Bad signatures spread over several groups (one group with two), a bad hash and a
        // wrong signer length among them.
        for index in [0, 7, 255, 256, 300, 301, 599] {
            messages[index].signature[40] ^= 0x10;
        }
        messages[100].hash[0] ^= 1;
        messages[200].signer.truncate(16);
        let all: Vec<&Message> = messages.iter().collect();
        let verdicts = verify_all(&all);
        for (index, verdict) in verdicts.iter().enumerate() {
            let expected = match index {
                0 | 7 | 255 | 256 | 300 | 301 | 599 => Err(VerifyError::BadSignature),
                100 => Err(VerifyError::BadHash),
                200 => Err(VerifyError::BadSigner(16)),
                _ => Ok(()),
            };
            assert_eq!(verdict, &expected, "message {index}");
            assert_eq!(verify(&messages[index]), expected, "message {index} alone");
        }
        assert!(verify_all(&[]).is_empty());
    }

    #[test]
    fn the_rejections_of_verify_strict_are_kept() {
        let good = sign_message(cast("strict"), &key());
        let mut cases: Vec<(&str, Message)> = Vec::new();

        // R of small order (each of the eight torsion points), with an s that fits it.
        // R of small order: each torsion point as the whole nonce (r = 0), so that the
        // equation itself holds (exactly for the identity, up to the cofactor for the others).
        for torsion in EIGHT_TORSION {
            cases.push(("R small order", signed_with_nonce(&good, 0, torsion)));
        }
        // R whose y is not reduced mod p (y = p + 3 would decode as y = 3).
        let mut non_canonical_r = good.clone();
        let mut y = [0xffu8; 32];
        y[0] = 0xed + 3;
        y[31] = 0x7f;
        non_canonical_r.signature[..32].copy_from_slice(&y);
        cases.push(("R not canonical", non_canonical_r));
        // s at or above the group order.
        let mut big_s = good.clone();
        big_s.signature[63] |= 0x10;
        cases.push(("s not canonical", big_s));
        // A signer of small order, with a signature that would satisfy a lax check: with A the
        // identity, [s]B = R for any message.
        let identity_signer = Message {
            signer: EIGHT_TORSION[0].compress().to_bytes().to_vec(),
            signature: {
                let s = Scalar::from(99u64);
                let mut signature = (ED25519_BASEPOINT_POINT * s).compress().to_bytes().to_vec();
                signature.extend_from_slice(s.as_bytes());
                signature
            },
            ..good.clone()
        };
        cases.push(("signer small order", identity_signer));

        for (what, message) in &cases {
            assert!(!strict(message), "{what}: verify_strict rejects it");
            assert!(verify(message).is_err(), "{what}");
            assert!(
                verify_all(&[message, &good])[0].is_err(),
                "{what}, in a batch"
            );
        }
        assert!(strict(&good));
        assert_eq!(verify_all(&[&good, &cases[0].1])[0], Ok(()));

        let p_minus = |n: u8| {
            let mut y = [0xffu8; 32];
            y[0] = 0xed - n;
            y[31] = 0x7f;
            y
        };
        assert!(canonical_y(&p_minus(1)), "p - 1");
        assert!(!canonical_y(&p_minus(0)), "p");
        assert!(!canonical_y(&[0xff; 32]), "2^255 - 1, sign bit set");
        assert!(canonical_y(good.signature[..32].try_into().unwrap()));
    }

    #[test]
    fn a_nonce_with_a_small_order_part_is_the_one_difference_from_verify_strict() {
        let good = sign_message(cast("torsion"), &key());
        // An honest signature with a nonce of our choosing: both rules accept it.
        let honest = signed_with_nonce(&good, 424_242, EdwardsPoint::default());
        assert!(strict(&honest));
        assert_eq!(verify(&honest), Ok(()));
        // The same with a point of order 8 added to R (only the key's owner can make this):
        // the node's cofactorless check rejects it, the cofactored equation accepts it, alone
        // and in a batch alike.
        let mixed = signed_with_nonce(&good, 424_242, EIGHT_TORSION[1]);
        assert!(!strict(&mixed));
        assert_eq!(verify(&mixed), Ok(()));
        let batch: Vec<&Message> = std::iter::repeat_n(&good, 20).chain([&mixed]).collect();
        assert!(verify_all(&batch).iter().all(Result::is_ok));
    }

    #[test]
    fn agrees_with_verify_strict_on_random_corruptions() {
        let keys: Vec<SigningKey> = (1..=3u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let mut seed = 0x5eed_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut messages = Vec::new();
        for i in 0..300 {
            let mut message = sign_message(cast(&format!("{i}")), &keys[i % 3]);
            match next() % 4 {
                0 => {}
                1 => message.signature[(next() % 64) as usize] ^= 1 << (next() % 8),
                2 => message.signer = keys[(i + 1) % 3].verifying_key().to_bytes().to_vec(),
                _ => message.signer[(next() % 32) as usize] ^= 1 << (next() % 8),
            }
            messages.push(message);
        }
        let all: Vec<&Message> = messages.iter().collect();
        let verdicts = verify_all(&all);
        for (message, verdict) in messages.iter().zip(&verdicts) {
            assert_eq!(verdict.is_ok(), strict(message), "{message:?}");
        }
        assert!(verdicts.iter().filter(|v| v.is_ok()).count() > 50);
        assert!(verdicts.iter().filter(|v| v.is_err()).count() > 150);
    }
}
