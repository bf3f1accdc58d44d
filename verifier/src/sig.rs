//! Producer signatures: when an Ed25519 signature over JCS(rec) is valid.
//!
//! A pack of a million entries carries a million producer signatures, and the
//! ledger checks every one before it stores it, so both verify in batches.
//! Batches are only safe if they accept exactly what one-at-a-time
//! verification accepts: otherwise a producer could sign a record that one
//! verifier accepts and another refuses. `verify_strict` (cofactorless) does
//! not have that property against a cofactorless *or* a cofactored batch
//! equation: a signer who adds a small-order component to R gets a signature
//! the batch accepts with probability 1/2. So the rule is the cofactored
//! equation of ZIP-215, for which batch and single verification agree, made
//! strict where that costs nothing:
//!
//! - `s` must be canonical (`s < ℓ`);
//! - `R` must be a canonical point encoding (ZIP-215 alone would allow the
//!   19 non-canonical encodings, which makes signatures malleable);
//! - the key must be a canonical encoding of a point that is not of small
//!   order (`KeyHistory` refuses other keys when they are registered);
//! - `[8]([s]B − R − [k]A) = 0` with `k = SHA-512(R ‖ A ‖ JCS(rec)) mod ℓ`.
//!
//! Every signature made by a standard Ed25519 signer satisfies this rule
//! and `verify_strict` alike. The two differ only on signatures crafted by
//! the key's own holder with a small-order component, which carry no forgery
//! risk (the equation still binds the key) and which this rule treats the
//! same way in every verifier. The equation itself comes from `ed25519-zebra`
//! (the Zcash Foundation's ZIP-215 implementation); this module adds the
//! strictness checks and the parallel batching.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;
use ed25519_zebra::batch;
use rayon::prelude::*;

use crate::note::VerifierKey;

/// Signatures per batch: large enough that the per-batch cost vanishes,
/// small enough that both cores get work on a few thousand records.
pub const BATCH: usize = 512;

/// True when `bytes` is the canonical encoding of a field element `y < p`
/// (p = 2^255 − 19), ignoring the sign bit.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    // The non-canonical encodings are y = p + i for i in 0..19, i.e. the
    // low 255 bits are 0x7fff…ff(ed..ff).
    !(bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

/// Whether a producer key may be registered: a canonical encoding of a
/// point that is not of small order.
pub fn acceptable_key(key: &VerifyingKey) -> bool {
    canonical_y(key.as_bytes()) && !key.is_weak()
}

/// Verifies one producer signature under the rule above.
pub fn verify(key: &VerifierKey, msg: &[u8], sig: &[u8; 64]) -> bool {
    let Some(item) = item(key, msg, sig) else {
        return false;
    };
    item.verify_single().is_ok()
}

fn item(key: &VerifierKey, msg: &[u8], sig: &[u8; 64]) -> Option<batch::Item> {
    if !acceptable_key(key.key()) {
        return None;
    }
    item_of_acceptable_key(key, msg, sig)
}

/// [`item`] for a key already found acceptable.
fn item_of_acceptable_key(key: &VerifierKey, msg: &[u8], sig: &[u8; 64]) -> Option<batch::Item> {
    let r: [u8; 32] = sig[..32].try_into().ok()?;
    if !canonical_y(&r) {
        return None;
    }
    let vk = ed25519_zebra::VerificationKeyBytes::from(key.key().to_bytes());
    Some(batch::Item::from((vk, ed25519_dalek::Signature::from_bytes(sig), msg)))
}

/// Verifies many signatures, in parallel batches; element `i` of the result
/// says whether `items[i]` is valid. Equal to calling [`verify`] on each
/// (except with probability 2^-128 per batch), but several times faster when
/// all are valid. A batch that fails is re-checked one signature at a time,
/// so a bad signature is always located.
pub fn verify_many(items: &[(&VerifierKey, &[u8], &[u8; 64])]) -> Vec<bool> {
    verify_many_in(items, BATCH)
}

/// Signatures per batch when verifying a whole pack: larger batches cost
/// less per signature (the multiscalar multiplication is shared by more
/// points; ~4% less time for a 1M-entry pack than [`BATCH`]), and a pack's
/// chunks of 4,096 leaves still give both cores a batch each.
pub const PACK_BATCH: usize = 2048;

/// Fewest signatures worth a batch of their own on another core: below
/// twice this, a call is verified on the calling thread, not handed to the
/// pool and waited for (the ledger's leader verifies ~5 at a time).
pub const MIN_SPLIT: usize = 64;

/// [`verify_many`] with at most `batch` signatures per batch. A call of
/// fewer than `batch` signatures but at least 2 × [`MIN_SPLIT`] is still
/// split across the pool's threads (a 512-signature call took twice as
/// long on one thread).
pub fn verify_many_in(items: &[(&VerifierKey, &[u8], &[u8; 64])], batch: usize) -> Vec<bool> {
    let batch = batch.max(1);
    if items.len() <= batch && items.len() < 2 * MIN_SPLIT {
        return verify_chunk(items);
    }
    let per_thread = items.len().div_ceil(rayon::current_num_threads().max(1)).max(MIN_SPLIT);
    items.par_chunks(batch.min(per_thread)).flat_map_iter(verify_chunk).collect()
}

fn verify_chunk(chunk: &[(&VerifierKey, &[u8], &[u8; 64])]) -> Vec<bool> {
    // Each distinct key is checked once per chunk, not once per signature:
    // the small-order test was ~7% of a batch's instructions (callgrind).
    let mut acceptable: HashMap<&[u8; 32], bool> = HashMap::new();
    let prepared: Vec<Option<batch::Item>> = chunk
        .iter()
        .map(|(k, m, s)| {
            let ok = *acceptable.entry(k.key().as_bytes()).or_insert_with(|| acceptable_key(k.key()));
            ok.then(|| item_of_acceptable_key(k, m, s)).flatten()
        })
        .collect();
    if chunk.len() == 1 {
        // A batch of one costs more than the single check it equals.
        return prepared.into_iter().map(|it| it.is_some_and(|it| it.verify_single().is_ok())).collect();
    }
    let all_ok = prepared.iter().all(Option::is_some) && {
        let mut v = batch::Verifier::new();
        for it in prepared.iter().flatten() {
            v.queue(it.clone());
        }
        v.verify(rand_core::OsRng).is_ok()
    };
    if all_ok {
        vec![true; chunk.len()]
    } else {
        prepared.into_iter().map(|it| it.is_some_and(|it| it.verify_single().is_ok())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::SignerKey;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::Signer as _;
    use sha2::{Digest, Sha512};

    fn key(seed: u8) -> SignerKey {
        SignerKey::from_seed("svc", &[seed; 32]).expect("valid name")
    }

    fn dalek(k: &SignerKey) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(k.seed())
    }

    #[test]
    fn honest_signatures_agree_with_verify_strict() {
        let k = key(1);
        for i in 0..64u32 {
            let msg = format!("message {i}");
            let sig = k.sign(msg.as_bytes());
            assert!(verify(&k.verifier(), msg.as_bytes(), &sig));
            assert!(k.verifier().verify(msg.as_bytes(), &sig), "verify_strict agrees");
            assert!(!verify(&k.verifier(), b"other", &sig));
        }
    }

    /// A signature with a small-order component in R, made by the key's
    /// holder: verify_strict refuses it, the cofactored rule accepts it, and
    /// single and batch verification agree every time.
    #[test]
    fn torsion_in_r_is_judged_the_same_by_single_and_batch() {
        let k = key(2);
        let sk = dalek(&k);
        let a = sk.verifying_key();
        let secret = sk.to_scalar();
        let msg = b"crafted";
        let r = Scalar::from(12345u64);
        let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[1]).compress();
        let h = Scalar::from_hash(
            Sha512::new().chain_update(big_r.as_bytes()).chain_update(a.as_bytes()).chain_update(msg),
        );
        let s = r + h * secret;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        assert!(!k.verifier().verify(msg, &sig), "verify_strict refuses it");
        assert!(verify(&k.verifier(), msg, &sig), "the cofactored rule accepts it");
        let vk = k.verifier();
        let honest = sk.sign(b"x").to_bytes();
        for _ in 0..32 {
            let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> =
                vec![(&vk, b"x".as_slice(), &honest), (&vk, msg.as_slice(), &sig)];
            assert_eq!(verify_many(&items), vec![true, true]);
        }
    }

    #[test]
    fn batches_locate_every_bad_signature() {
        let keys: Vec<SignerKey> = (0..3).map(|i| key(10 + i)).collect();
        let vks: Vec<VerifierKey> = keys.iter().map(SignerKey::verifier).collect();
        let msgs: Vec<Vec<u8>> = (0..1500).map(|i| format!("m{i}").into_bytes()).collect();
        let mut sigs: Vec<[u8; 64]> = msgs.iter().enumerate().map(|(i, m)| keys[i % 3].sign(m)).collect();
        let bad = [7usize, 600, 601, 1499];
        for &b in &bad {
            sigs[b][40] ^= 1;
        }
        let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> =
            (0..msgs.len()).map(|i| (&vks[i % 3], msgs[i].as_slice(), &sigs[i])).collect();
        // The ledger's batches, a pack's, batches of one and of everything.
        for batch in [BATCH, PACK_BATCH, 1, 7, items.len()] {
            let got = verify_many_in(&items, batch);
            assert_eq!(got.len(), items.len());
            for (i, ok) in got.iter().enumerate() {
                assert_eq!(*ok, !bad.contains(&i), "signature {i} in batches of {batch}");
            }
        }
        // Calls smaller than a batch: on the calling thread below
        // 2 × MIN_SPLIT, split across the pool from there on.
        for len in [2 * MIN_SPLIT - 1, 2 * MIN_SPLIT, 300] {
            let got = verify_many(&items[..len]);
            assert_eq!(got.len(), len);
            for (i, ok) in got.iter().enumerate() {
                assert_eq!(*ok, !bad.contains(&i), "signature {i} of a call of {len}");
            }
        }
        assert_eq!(verify_many(&items), verify_many_in(&items, BATCH));
    }

    /// Under the identity key, `R = [s]B` satisfies the equation for every
    /// message: only the key check refuses such a signature. Batches check
    /// each key once per batch, so mix it with acceptable keys, before and
    /// after, in batches of every shape.
    #[test]
    fn a_small_order_key_is_refused_in_every_batch_whatever_its_neighbours() {
        let mut id = [0u8; 32];
        id[0] = 1;
        let weak = VerifierKey::new("svc", VerifyingKey::from_bytes(&id).expect("decodes")).expect("name");
        let s = Scalar::from(424242u64);
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice((ED25519_BASEPOINT_POINT * s).compress().as_bytes());
        forged[32..].copy_from_slice(s.as_bytes());
        // [8]([s]B − R − [k]A) = 0 whatever k = SHA-512(R ‖ A ‖ M) is.
        let r = curve25519_dalek::edwards::CompressedEdwardsY(forged[..32].try_into().expect("32"))
            .decompress()
            .expect("point");
        let a = weak.key().to_edwards();
        for k in [Scalar::from(1u64), Scalar::from(987_654_321u64), -Scalar::from(5u64)] {
            let lhs = (ED25519_BASEPOINT_POINT * s - r - a * k).mul_by_cofactor();
            assert!(
                curve25519_dalek::traits::IsIdentity::is_identity(&lhs),
                "the forgery satisfies the equation; only the key check stands in its way"
            );
        }
        assert!(!verify(&weak, b"any message", &forged));
        let good: Vec<SignerKey> = (0..2).map(|i| key(20 + i)).collect();
        let vks: Vec<VerifierKey> = good.iter().map(SignerKey::verifier).collect();
        let msgs: Vec<Vec<u8>> = (0..300).map(|i| format!("m{i}").into_bytes()).collect();
        let sigs: Vec<[u8; 64]> = msgs.iter().enumerate().map(|(i, m)| good[i % 2].sign(m)).collect();
        let is_forged = |i: usize| i % 5 == 3;
        let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> = (0..msgs.len())
            .map(|i| {
                if is_forged(i) {
                    (&weak, msgs[i].as_slice(), &forged)
                } else {
                    (&vks[i % 2], msgs[i].as_slice(), &sigs[i])
                }
            })
            .collect();
        for batch in [1, 2, 4, 7, BATCH, PACK_BATCH] {
            let got = verify_many_in(&items, batch);
            for (i, ok) in got.iter().enumerate() {
                assert_eq!(*ok, !is_forged(i), "signature {i} in batches of {batch}");
            }
        }
    }

    #[test]
    fn non_canonical_r_and_s_and_small_order_keys_are_refused() {
        let k = key(3);
        let msg = b"m";
        let sig = k.sign(msg);
        // s + ℓ: the same equation, a non-canonical scalar.
        let mut high_s = sig;
        let s = Scalar::from_canonical_bytes(sig[32..].try_into().expect("32")).expect("canonical");
        // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let l_bytes: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s.as_bytes()[i]) + u16::from(l_bytes[i]) + carry;
            high_s[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(!verify(&k.verifier(), msg, &high_s));
        // A non-canonical R encoding.
        let mut bad_r = sig;
        bad_r[..32].copy_from_slice(&[0xff; 32]);
        bad_r[31] = 0x7f;
        assert!(!canonical_y(bad_r[..32].try_into().expect("32")));
        assert!(!verify(&k.verifier(), msg, &bad_r));
        // The identity (y = 1) is a small-order key.
        let mut id = [0u8; 32];
        id[0] = 1;
        let weak = VerifyingKey::from_bytes(&id).expect("decodes");
        assert!(!acceptable_key(&weak));
        assert!(acceptable_key(k.verifier().key()));
    }
}
